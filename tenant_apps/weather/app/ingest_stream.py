raise SystemExit("the stream app comes with the stream issue")
