"""The training system: the loop (:mod:`.trainer`), the pure step (:mod:`.steps`), its state,
run plan, optimiser, losses, metrics writer, checkpoints, workdir lock and record, config checks,
evaluation loop and fine-tuning start. Imports only models/, data/, weights/, perf/ and configs/.
"""
