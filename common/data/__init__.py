"""The shared data layer: discovery, decoding, the deterministic split and the on-disk image store.

Both arms get their pixels from here, so they see the same decoded images, the same split
and the same labels. The flow is::

    discover.discover(root)       list class folders and files, hash them, sniff formats
      -> decode.decode_all(...)   decode + resize every image once (cached on disk)
      -> split.make_split(...)    seeded, stratified train/val/test assignment
      -> dataset.StudyData        the decoded images (an on-disk imagestore.ImageStore, read a
                                  batch at a time), the split as index arrays into it, the manifest

``dataset.load_study_data`` runs the whole flow. A data root is either split folders
(``train/`` plus a held-out ``test/``, ``val/``, ``valid/`` or ``validation/``, each holding
one folder per class) or class folders only. With no root, scikit-learn's bundled ``digits``
set goes through the same path.

A file that cannot be used (not an image, unreadable, refused by the decoder whatever it
raises, or over the pixel limit: ``limits``) is skipped and listed with the reason, never an
error; only a class left without usable images stops the study.
"""
