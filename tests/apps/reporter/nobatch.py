raise SystemExit("this app takes no files")
