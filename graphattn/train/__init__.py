"""Training for ``graphattn train``: the engine (:mod:`.engine`) and the tasks (:mod:`.tasks`)."""
