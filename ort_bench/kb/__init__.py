"""Facts x templates -> probes: the knowledge base, the form templates, rendering, ORT import."""
