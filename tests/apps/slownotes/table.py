from mysimbdp_app import Table

NOTES = Table(
    name="notes",
    columns=[("id", "int"), ("title", "text"), ("body", "text"), ("amount", "double"), ("at", "timestamp")],
    primary_key="((id))",
)
