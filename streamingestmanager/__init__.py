"""Stream ingestion, server side: the stream API (:mod:`.api`) records what each tenant wants running
(:mod:`.state`, :mod:`.service`); the controller (:mod:`.controller`) runs the tenant's stream app
instances in the sandbox (:mod:`.instances`), stores their reports and autoscales (:mod:`.autoscaler`).
The tenants' client, ``mysimbdp-publish``, is :mod:`.publish`."""
