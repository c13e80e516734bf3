"""gunicorn reads this file when started from the project's root without `-c`, so that
`gunicorn wsgi:app` serves with the packaged configuration, wallet_proxy/gunicorn_config.py
(gthread workers, JSON logs, the metrics folder, the settings checked before any worker
boots, the trigger deliverer started in the workers). Tests and benchmarks pass `-c`.
"""

from wallet_proxy.gunicorn_config import *  # noqa: F403
