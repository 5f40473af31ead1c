"""What deploykit keeps on the hosts about itself: the release registry, backup sets, the journal, the lock."""
