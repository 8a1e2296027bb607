"""stackube-controller: Tenant and Network reconcilers."""
