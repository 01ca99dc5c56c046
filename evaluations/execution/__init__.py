"""Cell computation, the one commit loop, and the executors (local, Ray) behind one interface."""
