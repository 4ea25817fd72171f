"""docker build on the core: Dockerfile parsing, the stage graph, the content-keyed cache, the executor and the
exporter that names images through the image service (moby's ImageExportedByBuildkit/ImageNamedByBuildkit hooks)."""
