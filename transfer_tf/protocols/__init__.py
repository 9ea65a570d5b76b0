"""The three transfer protocols of Sec. 4 and the sweep machinery they share.

`sweep` (resumable one-JSON-per-cell sweeps), `features` (penultimate features from a SavedModel),
`logreg` (L2-regularised logistic regression by L-BFGS on fixed features). Fine-tuning and
training from scratch build on `sweep` the same way. Submodules are imported on use, so reading
results never loads TensorFlow.
"""
