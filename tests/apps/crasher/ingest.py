import os

print("reading", os.environ["MYSIMBDP_INPUT_FILE"])
raise RuntimeError("this app has a bug")
