"""kubestack, the CNI plugin (a thin standard-library client), and its node daemon."""
