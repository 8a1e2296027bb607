"""stackube-proxy: ClusterIP Services inside each tenant's Neutron router."""
