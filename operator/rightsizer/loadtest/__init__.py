"""The load-testing machinery: load shapes, the Locust-based load generator, its stop rules and its distributed
(master/worker) form, placement of a server and the generator on this host's CPUs, and supervised server
processes. Imports nothing of the operator."""
