"""Drives the status page in a real browser: Debian's chromium, headless, through Debian's
chromium-driver and Selenium (nothing is downloaded).

usage: status_page.py URL SCREENSHOT
Prints one JSON line once the page shows the lakes ({"lakes": [...], "snapshots": {...}}),
waits for a line on stdin (the test commits meanwhile), waits until the page shows more
snapshots for lake `sales` (it refreshes itself), saves a screenshot and prints a last JSON
line: the lakes, the snapshots before and after, the browser console's SEVERE messages, and
the readiness badge's text.
"""
import json
import os
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

os.environ["SE_OFFLINE"] = "true"
url, screenshot = sys.argv[1:3]
opts = Options()
opts.binary_location = os.environ.get("DLC_CHROMIUM", "/usr/bin/chromium")
for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--window-size=1280,1100"):
    opts.add_argument(arg)
opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
driver = webdriver.Chrome(
    service=Service(os.environ.get("DLC_CHROMEDRIVER", "/usr/bin/chromedriver")), options=opts)
try:
    driver.get(url)

    def lakes():
        # Read in one script: the page redraws its rows every refresh, so elements found in one
        # call can be gone by the next.
        return driver.execute_script(
            "return Object.fromEntries([...document.querySelectorAll('tr[data-lake]')].map("
            "r => [r.dataset.lake, Number(r.querySelector(\"td[data-field='snapshots']\").textContent)]))")

    deadline = time.monotonic() + 30
    while len(lakes()) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    before = lakes()
    print(json.dumps({"lakes": sorted(before), "snapshots": before}), flush=True)
    sys.stdin.readline()
    deadline = time.monotonic() + 30
    after = lakes()
    while after.get("sales", 0) <= before.get("sales", 0) and time.monotonic() < deadline:
        time.sleep(0.2)
        after = lakes()
    driver.save_screenshot(screenshot)
    severe = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    print(json.dumps({
        "lakes": sorted(after),
        "before": before,
        "after": after,
        "severe": severe,
        "ready": driver.find_element(By.ID, "ready").text,
        "problems": driver.find_element(By.ID, "problems").text,
        "versions": driver.find_element(By.ID, "versions").text,
    }), flush=True)
finally:
    driver.quit()
