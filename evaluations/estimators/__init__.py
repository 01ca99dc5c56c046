"""Suite estimators, one file each, behind one interface and registry."""
