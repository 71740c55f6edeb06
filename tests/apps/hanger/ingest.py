import time

print("thinking...", flush=True)
while True:
    time.sleep(1)
