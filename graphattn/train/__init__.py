"""Training for ``graphattn train``: the engine (:mod:`.engine`) and the tasks (:mod:`.tasks`,
:mod:`.graph_tasks`); ``graphattn ensemble`` averages finished runs (:mod:`.ensemble`)."""
