"""The Dockerfile frontend: lexer (shell words, variables), parser (lines to nodes), instructions (typed stages),
ignore (.dockerignore patterns).  BuildKit's frontend/dockerfile is the behavioural reference."""
