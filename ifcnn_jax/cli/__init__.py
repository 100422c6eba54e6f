"""The command-line programs (``ifcnn-fuse``, ``ifcnn-eval``, ``ifcnn-synth``) and
what they share. Library and training code never imports from here."""
