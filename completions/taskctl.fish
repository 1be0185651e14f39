complete --keep-order --exclusive --command taskctl --arguments "(COMPLETE=fish taskctl -- (commandline --current-process --tokenize --cut-at-cursor) (commandline --current-token))"
