"""fetchdata: the tenant's batch client. It checks files against the tenant's constraints, splits large
CSV files at record boundaries when allowed, and uploads them (resumably) to the upload API."""
