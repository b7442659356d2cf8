"""Training: the one loop (:mod:`.loop`), data-parallel runs (:mod:`.distributed`) and the gate (:mod:`.gate`)."""
