print("starting the stream app", flush=True)
raise RuntimeError("this stream app has a bug")
