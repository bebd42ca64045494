"""The model: from the features and labels to a registered LSTM and its champion.

Read in this order:
    windows.py     the last K classifications of each row, as arrays (one place for the feature list)
    lstm.py        the network: an LSTM beside a linear path, and the tabular preprocessing
    training.py    the training loop: epochs, early stopping on validation ROC-AUC
    budget.py      what training costs: examples per epoch, progress, the up-front estimate
    device.py      where torch runs (CUDA when there is one) and on how many threads
    paths.py       the linear path tuned like the logistic baseline; per horizon, it or the sequence model
    baselines.py   the honest baselines: base rate, logistic regression, random forest, gradient boosting
    bootstrap.py   the volunteer-level bootstrap: seeded resamples, every metric per resample, the interval
    evaluation.py  every metric with its volunteer-level bootstrap interval, and the lift
    registry.py    MLflow: the logged model, its version, and the promotion gate
    assets.py      the `engagement_model` asset that ties them together
"""
