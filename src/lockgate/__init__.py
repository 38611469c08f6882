"""lockgate."""
