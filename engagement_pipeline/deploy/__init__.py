"""`engagement deploy up | status | down`: the services a deployment runs on, for one $ENGAGEMENT_HOME.

    postgres.py   a PostgreSQL cluster under <home>/deploy/postgres (loopback and a unix socket in the home)
                  holding Dagster's run, event-log and schedule storage and MLflow's backend store
    services.py   start a service in its own process group, record it, wait until it answers, stop it
    config.py     the deployed dagster.yaml (run queue, run monitoring, retention) and workspace.yaml
    command.py    up, status, down

Everything a deployment writes lives in <home>/deploy/ (state.json records each service's pid, process
group, start time and address) and <home>/dagster/dagster.yaml; the `engagement` commands read the
tracking URI from <home>/deploy/tracking_uri (settings.py), so they work against a deployed home unchanged.
"""
