"""CNI networking: config loading, plugin execution, network namespaces."""
