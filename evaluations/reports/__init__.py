"""The report renderer, and one section per file behind one interface and registry."""
