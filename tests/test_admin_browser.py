"""The operator console in a real headless Chromium (Debian's chromium and chromium-driver,
installed by .ci/run), against the live admin, a real worker, Redis and the loopback receiver.
Without them these tests are skipped, saying how to install them, unless CI is set: then they fail.

Saves screenshots of the delivery page under artifacts/ for a reviewer to look at.
"""

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select, WebDriverWait

from deliveries import publish
from deliveries.models import AttemptTrigger, Delivery, DeliveryStatus
from endpoints.models import Endpoint
from tests.conftest import in_ci, wait_until
from tests.operators import PASSWORD, VIEW_PERMISSIONS, make_delivery, make_staff

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
MISSING = ", ".join(str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists())
NEEDS = f"the browser tests need Debian's chromium and chromium-driver ({MISSING} missing)"
INSTALL = "apt-get install chromium chromium-driver"

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.slow,
    # `make test` works on a fresh machine; CI (.ci/run installs them) must run these tests.
    pytest.mark.skipif(bool(MISSING) and not in_ci(), reason=f"{NEEDS}: {INSTALL}; with CI set this fails instead"),
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
# Without these, Chromium on a machine with no network stalls on updates, sync and first-run UI.
CHROMIUM_ARGUMENTS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--window-size=1400,1000",
)


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    if MISSING:  # only with CI set: elsewhere the module is skipped
        pytest.fail(f"{NEEDS}: {INSTALL}. CI is set: the browser tests must run (.ci/run installs them).")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in CHROMIUM_ARGUMENTS:
        options.add_argument(argument)
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        options.add_argument(f"--user-data-dir={profile}")
        # The driver path is given, so selenium-manager downloads nothing.
        driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
        try:
            yield driver
        finally:
            driver.quit()


def wait_for(driver: WebDriver, css: str, timeout: float = 15):
    return WebDriverWait(driver, timeout).until(lambda d: d.find_element(By.CSS_SELECTOR, css))


def log_in(driver: WebDriver, live_server, username: str) -> None:
    driver.delete_all_cookies()
    driver.get(f"{live_server.url}/admin/login/")
    driver.find_element(By.NAME, "username").send_keys(username)
    driver.find_element(By.NAME, "password").send_keys(PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    wait_for(driver, "#logout-form")


def text_of(driver: WebDriver, css: str) -> str:
    return driver.find_element(By.CSS_SELECTOR, css).text


def save_full_page(driver: WebDriver, name: str) -> Path:
    """A screenshot of the whole page, not only the window."""
    ARTIFACTS.mkdir(exist_ok=True)
    height, chrome = driver.execute_script(
        "return [document.documentElement.scrollHeight, window.outerHeight - window.innerHeight]"
    )
    driver.set_window_size(1400, max(1000, height + chrome))
    path = ARTIFACTS / name
    driver.save_screenshot(str(path))
    driver.set_window_size(1400, 1000)
    return path


def test_operator_retries_a_failed_delivery_and_rotates_a_secret_in_a_real_browser(
    live_server, celery_worker, receiver, browser
):
    # Given a delivery that failed: the receiver refused it with a 400
    receiver.script("/hook", [(400, {"Content-Type": "text/plain"}, b"unknown customer 77")])
    endpoint = Endpoint.objects.create(url=receiver.url("/hook"), tenant="acme", description="Acme orders")
    event = publish("order.paid", {"order": 1042, "amount": "99.00"}, tenant="acme", idempotency_key="order-1042")
    wait_until(lambda: Delivery.objects.filter(event=event, status=DeliveryStatus.FAILED).exists(), what="failure")
    delivery = event.deliveries.get()
    receiver.script("/hook", [(200, {"Content-Type": "text/plain"}, b"thanks")])
    make_staff("operator")

    # When the operator opens it and presses Retry now
    log_in(browser, live_server, "operator")
    browser.get(f"{live_server.url}/admin/deliveries/delivery/{delivery.pk}/change/")
    assert text_of(browser, ".field-status_display .readonly") == "failed"
    assert "unknown customer 77" in text_of(browser, "#attempt-1 + tr")
    save_full_page(browser, "delivery-detail-failed.png")
    browser.find_element(By.ID, "retry-now").click()

    # Then the page says it was queued, the receiver gets it, and a reload shows it succeeded
    assert "queued" in wait_for(browser, ".messagelist").text
    receiver.wait_for(2, "/hook")

    def shows_succeeded() -> bool:
        browser.refresh()
        return text_of(browser, ".field-status_display .readonly") == "succeeded"

    wait_until(shows_succeeded, what="the delivery page shows succeeded", interval=0.5)
    assert "Manual retry" in text_of(browser, "#attempt-2")
    assert not browser.find_elements(By.ID, "retry-now")  # nothing left to retry
    save_full_page(browser, "delivery-detail.png")
    assert Delivery.objects.get(pk=delivery.pk).attempts.get(number=2).trigger == AttemptTrigger.MANUAL

    browser.get(f"{live_server.url}/admin/deliveries/event/{event.pk}/change/")
    assert '"order": 1042' in text_of(browser, ".field-payload_pretty")
    save_full_page(browser, "event-detail.png")

    # When the operator rotates the endpoint's secret from the endpoint list
    old_secret = endpoint.secret
    browser.get(f"{live_server.url}/admin/endpoints/endpoint/")
    assert "100.0 %" not in text_of(browser, "#result_list")  # one success of two attempts
    assert "50.0 %" in text_of(browser, "#result_list")
    save_full_page(browser, "endpoints-list.png")
    browser.find_element(By.CSS_SELECTOR, f"input[name=_selected_action][value='{endpoint.pk}']").click()
    Select(browser.find_element(By.NAME, "action")).select_by_value("rotate_secrets")
    browser.find_element(By.CSS_SELECTOR, "button[name=index]").click()
    assert wait_for(browser, "input[name=grace_hours]").get_attribute("value") == "24"
    browser.find_element(By.CSS_SELECTOR, "input[name=apply]").click()

    # Then the new secret is shown once, the old one keeps signing, and a reload shows nothing
    shown = wait_for(browser, "code.webhooks-new-secret").text
    endpoint = Endpoint.objects.get(pk=endpoint.pk)
    assert shown == endpoint.secret != old_secret
    assert endpoint.live_secrets() == [shown, old_secret]
    save_full_page(browser, "new-secret-shown-once.png")
    browser.refresh()
    wait_for(browser, "#no-secret")
    assert shown not in browser.page_source
    browser.get(f"{live_server.url}/admin/endpoints/endpoint/{endpoint.pk}/change/")
    assert shown not in browser.page_source and old_secret not in browser.page_source

    # And staff without the permissions see neither Retry now nor the endpoint actions
    make_staff("viewer", VIEW_PERMISSIONS)
    log_in(browser, live_server, "viewer")
    failed = make_delivery(endpoint)
    browser.get(f"{live_server.url}/admin/deliveries/delivery/{failed.pk}/change/")
    assert text_of(browser, ".field-status_display .readonly") == "failed"
    assert not browser.find_elements(By.ID, "retry-now")
    for page in ("deliveries/delivery", "endpoints/endpoint"):
        browser.get(f"{live_server.url}/admin/{page}/")
        assert offered_actions(browser) == set(), page


def offered_actions(driver: WebDriver) -> set[str]:
    try:
        select = driver.find_element(By.NAME, "action")
    except NoSuchElementException:
        return set()
    return {option.get_attribute("value") for option in Select(select).options} - {""}
