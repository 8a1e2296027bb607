"""NetworkPolicy (networking.k8s.io/v1), compiled to what each pod may send and receive."""
