"""Batch ingestion, server side: the upload API (:mod:`.api`, :mod:`.uploads`) that stages complete,
verified files, and the manager (:mod:`.manager`, :mod:`.watcher`, :mod:`.runner`) that runs each staged
file through the tenant's batch app in the sandbox and writes its receipt."""
