"""Model families behind one interface and registry."""
