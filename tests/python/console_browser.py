"""Drives the web console in headless Chromium (Playwright), as an admin and then a viewer.

Run by tests/console.rs, which starts `tollgate up` and passes, in the environment:
CONSOLE_URL, EDGE_URL, ADMIN_TOKEN, VIEWER_TOKEN, CHROMIUM (the browser's path), SHOTS (where
screenshots go) and IDLE_SECONDS (the console's session idle timeout). Prints DONE at the end.
"""

import json
import os
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone

from playwright.sync_api import expect, sync_playwright

CONSOLE = os.environ["CONSOLE_URL"]
EDGE = os.environ["EDGE_URL"]
SHOTS = os.environ["SHOTS"]
IDLE = float(os.environ["IDLE_SECONDS"])


def chat(secret, model="mock", content="hi"):
    """Sends one chat request for `model` to the edge with `secret`; returns (status, request id)."""
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": content}]})
    request = urllib.request.Request(
        EDGE + "/v1/chat/completions",
        data=body.encode(),
        headers={"Authorization": "Bearer " + secret, "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers["x-request-id"]
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("x-request-id")


def wait_for_status(secret, wanted, model="mock", content="hi"):
    """Waits (up to 5 s, while the change reaches the edge) until `secret` gets a status in
    `wanted` for `model`."""
    for _ in range(50):
        status, _ = chat(secret, model, content)
        if status in wanted:
            return
        time.sleep(0.1)
    raise AssertionError(f"the edge answers {status}, not {wanted}")


def shot(page, name):
    page.screenshot(path=os.path.join(SHOTS, name + ".png"), full_page=True)


def page_team_id(page):
    """The id of console-team, as the teams page shows it."""
    page.click("nav >> text=Teams")
    return page.locator("tbody tr", has_text="console-team").locator("code").inner_text().strip()


def sign_in(page, token):
    page.goto(CONSOLE + "/sign-in")
    page.fill("#token", token)
    page.click("button[type=submit]")


def admin_flow(browser):
    context = browser.new_context()
    page = context.new_page()

    # Signed out, every page leads to sign-in; a wrong token is told so.
    page.goto(CONSOLE + "/keys")
    expect(page).to_have_url(CONSOLE + "/sign-in")
    shot(page, "01-sign-in")
    sign_in(page, "tga-not-a-token")
    expect(page.locator("#token-error")).to_contain_text("unknown, revoked or expired")
    sign_in(page, os.environ["ADMIN_TOKEN"])
    expect(page).to_have_url(CONSOLE + "/teams")

    # A team; a bad name is refused next to the field, and nothing is created.
    page.fill("#name", "")
    page.click("form.inline button[type=submit]")
    expect(page.locator("#name-error")).to_be_visible()
    page.fill("#name", "console-team")
    page.click("form.inline button[type=submit]")
    expect(page.locator("tbody tr", has_text="console-team")).to_have_count(1)
    shot(page, "02-teams")
    # From the keyboard: the first Tab reaches the skip link, which leads past the menu.
    page.keyboard.press("Tab")
    expect(page.locator("a.skip")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_be_focused()

    # A key for it: the secret is shown once, and not on reload.
    page.click("nav >> text=Keys")
    page.fill("#alias", "console-key")
    page.select_option("#team_id", label="console-team")
    page.click("form.inline button[type=submit]")
    secret = page.locator("#new-secret").inner_text().strip()
    assert secret.startswith("tg-"), secret
    shot(page, "03-key-created")
    page.reload()
    expect(page.locator("#new-secret")).to_have_count(0)
    assert secret not in page.content(), "the secret is still on the page"
    status, _ = chat(secret)
    assert status == 200, status

    # A daily budget for the team, with its live status.
    team_id = page_team_id(page)
    page.click("nav >> text=Budgets")
    page.select_option("#scope", "team")
    page.fill("#scope_id", team_id)
    page.fill("#amount_usd", "not-money")
    page.click("form.inline button[type=submit]")
    expect(page.locator("#amount_usd-error")).to_be_visible()
    page.fill("#scope_id", team_id)
    page.fill("#amount_usd", "25")
    page.fill("#thresholds", "80, 150")
    page.click("form.inline button[type=submit]")
    expect(page.locator("#thresholds-error")).to_contain_text("100")
    page.fill("#scope_id", team_id)
    page.fill("#amount_usd", "25")
    page.select_option("#period", "daily")
    page.fill("#thresholds", "50, 80 %")
    page.click("form.inline button[type=submit]")
    budget_row = page.locator("tbody tr", has_text="console-team")
    expect(budget_row).to_have_count(1)
    expect(budget_row.locator("td.thresholds")).to_have_text("50 %, 80 %")
    # A priced request made now: once the ledger has it, the budget shows it spent.
    status, _ = chat(secret)
    assert status == 200, status
    for _ in range(40):
        spent = budget_row.locator("td.spent").inner_text()
        if spent not in ("—", "") and float(spent) > 0:
            break
        time.sleep(0.25)
        page.reload()
    assert float(spent) > 0, f"the budget shows nothing spent ({spent})"
    expect(budget_row.locator("td.status")).to_contain_text("% used")
    shot(page, "04-budget")

    # The live tail, filtered by the team, shows the key's requests as they happen.
    page.click("nav >> text=Live requests")
    page.select_option("#team", label="console-team")
    page.click("form.inline button[type=submit]")
    time.sleep(0.5)  # the event stream opens
    seen = None
    for _ in range(20):
        status, request_id = chat(secret)
        assert status == 200, status
        row = page.locator(f"tr[data-request-id='{request_id}']")
        try:
            expect(row).to_have_count(1, timeout=500)
            seen = request_id
            break
        except AssertionError:
            continue
    assert seen, "the tail showed none of the requests"
    shot(page, "05-live-tail")

    # The spend chart has today's bar, and the team in its table.
    page.click("nav >> text=Spend")
    bars = page.locator("svg.chart rect.bar")
    expect(bars).to_have_count(14)
    today = bars.nth(13)
    assert float(today.get_attribute("data-cost")) > 0, "no spend today on the chart"
    expect(page.locator("tbody tr", has_text="console-team")).to_have_count(1)
    shot(page, "06-spend")

    # Blocking the key stops it on the edge; unblocking lets it through again.
    page.click("nav >> text=Keys")
    row = page.locator("tbody tr", has_text="console-key")
    row.get_by_role("button", name="block console-key").click()
    expect(page.locator("tbody tr", has_text="console-key")).to_contain_text("blocked")
    wait_for_status(secret, (401, 403))
    row = page.locator("tbody tr", has_text="console-key")
    row.get_by_role("button", name="unblock console-key").click()
    expect(page.locator("tbody tr", has_text="console-key")).to_contain_text("active")
    wait_for_status(secret, (200,))

    # Rotating with no grace: the new secret is shown once, the old one stops working.
    row = page.locator("tbody tr", has_text="console-key")
    row.locator("input[name=grace_seconds]").fill("soon")
    row.get_by_role("button", name="Rotate console-key").click()
    expect(page.locator("#grace_seconds-error")).to_be_visible()
    row = page.locator("tbody tr", has_text="console-key")
    row.locator("input[name=grace_seconds]").fill("0")
    row.get_by_role("button", name="Rotate console-key").click()
    rotated = page.locator("#new-secret").inner_text().strip()
    assert rotated.startswith("tg-") and rotated != secret
    shot(page, "07-key-rotated")
    wait_for_status(secret, (401,))
    wait_for_status(rotated, (200,))
    secret = rotated

    # Revoking the key in the console: the edge refuses it.
    page.click("nav >> text=Keys")
    row = page.locator("tbody tr", has_text="console-key")
    row.get_by_role("button", name="Revoke console-key").click()
    expect(page.locator("tbody tr", has_text="console-key")).to_contain_text("revoked")
    shot(page, "08-key-revoked")
    wait_for_status(secret, (401,))

    # Users and roles, prices, the audit trail and deployment health.
    page.click("nav >> text=Users")
    page.fill("#email", "")
    page.click("form.inline button[type=submit]")
    expect(page.locator("#email-error")).to_be_visible()
    page.fill("#email", "ada@example.com")
    page.select_option("#user_team", label="console-team")
    page.select_option("#role", "finance")
    page.click("form.inline button[type=submit]")
    ada = page.locator("tbody tr", has_text="ada@example.com")
    expect(ada).to_contain_text("finance")
    ada.locator("select[name=role]").select_option("viewer")
    ada.locator("form.change button").click()
    expect(page.locator("tbody tr", has_text="ada@example.com").locator("td").nth(2)).to_have_text("viewer")
    shot(page, "10-users")
    page.click("nav >> text=Prices")
    page.fill("#model", "console-model")
    page.fill("#input", "1.5")
    page.fill("#output", "six")
    page.click("form.inline button[type=submit]")
    expect(page.locator("#price-error")).to_be_visible()
    page.fill("#model", "console-model")
    page.fill("#input", "1.5")
    page.fill("#output", "6")
    page.click("form.inline button[type=submit]")
    expect(page.locator("tbody tr", has_text="console-model")).to_contain_text("1.5")
    shot(page, "11-prices")
    page.click("nav >> text=Audit")
    expect(page.locator("tr[data-type='key.revoked']")).to_have_count(1)
    expect(page.locator("tr[data-type='key.revoked']")).to_contain_text("bootstrap")
    page.fill("#type", "user.")
    page.click("form.inline button[type=submit]")
    expect(page.locator("tbody tr")).to_have_count(2)
    expect(page.locator("tr[data-type='user.updated']")).to_have_count(1)
    shot(page, "12-audit")
    page.click("nav >> text=Health")
    expect(page.locator("h1")).to_have_text("Deployment health")
    shot(page, "13-health")

    # A credential (its secret never shown again) and a deployment that uses it, served at once.
    page.click("nav >> text=Providers")
    page.fill("#credential_name", "console-aws")
    page.select_option("#credential_provider", "bedrock")
    page.fill("#aws_access_key_id", "AKIAEXAMPLEONLY")
    page.click("form.inline:has(#credential_name) button[type=submit]")
    expect(page.locator("#api_key-error")).to_contain_text("aws_secret_access_key")
    expect(page.locator("#credentials tbody tr", has_text="console-aws")).to_have_count(0)
    page.fill("#credential_name", "console-cred")
    page.select_option("#credential_provider", "openai_compatible")
    page.fill("#api_key", "sk-console-upstream-secret")
    page.click("form.inline:has(#credential_name) button[type=submit]")
    credentials = page.locator("#credentials tbody tr", has_text="console-cred")
    expect(credentials).to_contain_text("api_key")
    assert "sk-console-upstream-secret" not in page.content(), "the credential is on the page"
    page.fill("#model_name", "console-hosted")
    page.select_option("#deployment_provider", "openai_compatible")
    page.fill("#api_base", "ftp://nowhere.example")
    page.click("form.inline:has(#model_name) button[type=submit]")
    expect(page.locator(".error")).to_be_visible()
    page.fill("#model_name", "console-hosted")
    page.select_option("#deployment_provider", "openai_compatible")
    page.fill("#api_base", os.environ["UPSTREAM_URL"])
    page.select_option("#credential_id", label="console-cred")
    page.click("form.inline:has(#model_name) button[type=submit]")
    expect(page.locator("#deployments tbody tr", has_text="console-hosted")).to_contain_text("console-cred")
    shot(page, "14-providers")
    wait_for_status(os.environ["FIRST_KEY"], (200,), model="console-hosted")

    # A rate limit on the first key: one request a minute, enforced by the edge.
    page.click("nav >> text=Keys")
    first_key_id = page.locator("tbody tr", has_text="first-key").get_attribute("data-key")
    page.click("nav >> text=Limits")
    page.select_option("#limit_scope", "key")
    page.fill("#limit_scope_id", first_key_id)
    page.fill("#rpm", "many")
    page.click("form[action='/limits'] button[type=submit]")
    expect(page.locator("#figures-error")).to_be_visible()
    page.select_option("#limit_scope", "key")
    page.fill("#limit_scope_id", first_key_id)
    page.fill("#rpm", "1")
    page.click("form[action='/limits'] button[type=submit]")
    expect(page.locator(f"tbody tr", has_text=first_key_id).locator("td.rpm")).to_have_text("1")
    shot(page, "15-limits")
    statuses = []
    for _ in range(50):
        status, _ = chat(os.environ["FIRST_KEY"])
        statuses.append(status)
        if status == 429:
            break
        time.sleep(0.1)
    assert 429 in statuses, f"the limit was not enforced: {statuses}"

    # A schedule that lifts the limit around now: an empty window is refused next to it; an
    # open one lets the key through again at once.
    page.select_option("#schedule_limit", label=f"key {first_key_id}")
    page.fill("#schedule_start", "10:00")
    page.fill("#schedule_end", "10:00")
    page.click("form[action='/limits/schedules'] button[type=submit]")
    expect(page.locator("#window-error")).to_be_visible()
    now = datetime.now(timezone.utc)
    page.select_option("#schedule_limit", label=f"key {first_key_id}")
    page.fill("#schedule_start", (now - timedelta(hours=2)).strftime("%H:%M"))
    page.fill("#schedule_end", (now + timedelta(hours=2)).strftime("%H:%M"))
    page.fill("#schedule_rpm", "1000")
    page.click("form[action='/limits/schedules'] button[type=submit]")
    row = page.locator("tbody tr", has_text=first_key_id)
    expect(row.locator("td.schedules")).to_contain_text("1000 rpm")
    shot(page, "18-limit-schedule")
    wait_for_status(os.environ["FIRST_KEY"], (200,))

    # A guardrail: settings that are not JSON are refused next to them; a regex guardrail on
    # the hosted model blocks a prompt with the pattern on the edge.
    page.click("nav >> text=Guardrails")
    page.fill("#guardrail_name", "no-secrets")
    page.select_option("#guardrail_kind", "regex")
    page.fill("#guardrail_config", "{not json")
    page.click("form[action='/guardrails'] button[type=submit]")
    expect(page.locator("#config_json-error")).to_be_visible()
    page.fill("#guardrail_name", "no-secrets")
    page.select_option("#guardrail_kind", "regex")
    page.fill("#guardrail_models", "console-hosted")
    page.fill("#guardrail_config", '{"patterns": ["project-x"], "action": "block"}')
    page.click("form[action='/guardrails'] button[type=submit]")
    expect(page.locator("tbody tr", has_text="no-secrets")).to_contain_text("project-x")
    shot(page, "19-guardrails")
    wait_for_status(os.environ["FIRST_KEY"], (400,), "console-hosted", "about project-x")
    assert chat(os.environ["FIRST_KEY"], "console-hosted")[0] == 200

    # Routing: a model cannot be its own fallback (said next to the fallbacks); a rule is set.
    # A traffic rule that does nothing is refused; one that denies the mock model is enforced.
    page.click("nav >> text=Routing")
    page.fill("#rule_model", "console-hosted")
    page.fill("#rule_fallbacks", "console-hosted")
    page.click("form[action='/routing'] button[type=submit]")
    expect(page.locator("#fallbacks-error")).to_be_visible()
    page.fill("#rule_model", "console-hosted")
    page.select_option("#rule_strategy", "priority")
    page.fill("#rule_fallbacks", "mock")
    page.fill("#rule_retries", "2")
    page.click("form[action='/routing'] button[type=submit]")
    expect(page.locator("tbody tr[data-routing=console-hosted]")).to_contain_text("priority")
    page.fill("#traffic_models", "mock")
    page.click("form[action='/traffic'] button[type=submit]")
    expect(page.locator("#deny-error")).to_contain_text("does nothing")
    page.fill("#traffic_description", "close mock")
    page.fill("#traffic_models", "mock")
    page.fill("#traffic_deny", "mock is closed for this test")
    page.click("form[action='/traffic'] button[type=submit]")
    expect(page.locator("tbody tr", has_text="close mock")).to_contain_text("deny")
    shot(page, "20-routing")
    wait_for_status(os.environ["FIRST_KEY"], (403,))

    # Deleting asks first; declined, nothing changes. Deleting the traffic rule opens the mock
    # model again on the edge; deleting the guardrail lets the pattern through.
    traffic_row = page.locator("tbody tr", has_text="close mock")
    page.once("dialog", lambda dialog: dialog.dismiss())
    traffic_row.locator("form.delete button").click()
    expect(traffic_row).to_have_count(1)
    page.once("dialog", lambda dialog: dialog.accept())
    traffic_row.locator("form.delete button").click()
    expect(page.locator("tbody tr", has_text="close mock")).to_have_count(0)
    wait_for_status(os.environ["FIRST_KEY"], (200,))
    page.click("nav >> text=Guardrails")
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("tbody tr", has_text="no-secrets").locator("form.delete button").click()
    expect(page.locator("tbody tr", has_text="no-secrets")).to_have_count(0)
    shot(page, "21-deleted")
    wait_for_status(os.environ["FIRST_KEY"], (200,), "console-hosted", "about project-x")
    # A team still used by a key cannot be deleted: the reason is at the top of the page.
    page.click("nav >> text=Teams")
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("tbody tr", has_text="console-team").locator("form.delete button").click()
    expect(page.locator("#page-error")).to_be_visible()
    expect(page.locator("tbody tr", has_text="console-team")).to_have_count(1)

    # An access group granting a model to the team.
    page.click("nav >> text=Access")
    page.fill("#group_name", "")
    page.fill("#group_models", "console-hosted")
    page.click("form.inline button[type=submit]")
    expect(page.locator("#name-error")).to_be_visible()
    page.fill("#group_name", "console-group")
    page.fill("#group_models", "console-hosted, mock")
    page.select_option("#group_team", label="console-team")
    page.click("form.inline button[type=submit]")
    row = page.locator("tbody tr", has_text="console-group")
    expect(row).to_contain_text("console-hosted, mock")
    expect(row).to_contain_text("console-team")
    shot(page, "16-access-groups")

    # A response cache policy for the hosted model (a zero lifetime is refused).
    page.click("nav >> text=Cache")
    page.fill("#cache_model", "console-hosted")
    page.fill("#ttl_seconds", "0")
    page.click("form.inline button[type=submit]")
    expect(page.locator("#ttl_seconds-error")).to_be_visible()
    page.fill("#cache_model", "console-hosted")
    page.fill("#ttl_seconds", "600")
    page.select_option("#cache_scope", "global")
    page.click("form.inline button[type=submit]")
    expect(page.locator("tbody tr", has_text="console-hosted")).to_contain_text("600")
    shot(page, "17-cache")

    # A change without the session's CSRF token, or from another site, is refused.
    forged = page.request.post(CONSOLE + "/teams", form={"name": "forged"})
    assert forged.status == 403, forged.status
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    cross_site = page.request.post(
        CONSOLE + "/teams",
        form={"name": "cross-site", "csrf": csrf},
        headers={"Origin": "https://evil.example"},
    )
    assert cross_site.status == 403, cross_site.status
    page.goto(CONSOLE + "/teams")
    expect(page.locator("tbody tr", has_text="forged")).to_have_count(0)
    expect(page.locator("tbody tr", has_text="cross-site")).to_have_count(0)

    # A made-up session cookie leads to sign-in; so does one left idle too long.
    other = browser.new_context()
    other.add_cookies([{"name": "tollgate_console", "value": "f" * 64, "url": CONSOLE}])
    stranger = other.new_page()
    stranger.goto(CONSOLE + "/teams")
    expect(stranger).to_have_url(CONSOLE + "/sign-in")
    other.close()
    time.sleep(IDLE + 1)
    page.goto(CONSOLE + "/keys")
    expect(page).to_have_url(CONSOLE + "/sign-in")
    context.close()


def viewer_flow(browser):
    context = browser.new_context()
    page = context.new_page()
    sign_in(page, os.environ["VIEWER_TOKEN"])
    expect(page).to_have_url(CONSOLE + "/teams")
    expect(page.locator("tbody tr", has_text="console-team")).to_have_count(1)
    page.fill("#name", "viewer-team")
    page.click("form.inline button[type=submit]")
    expect(page.locator("#page-error")).to_contain_text("viewer")
    expect(page.locator("tbody tr", has_text="viewer-team")).to_have_count(0)
    shot(page, "09-viewer-refused")
    page.click("nav >> text=Keys")
    page.fill("#alias", "viewer-key")
    page.click("form.inline button[type=submit]")
    expect(page.locator("#page-error")).to_contain_text("viewer")
    expect(page.locator("#new-secret")).to_have_count(0)
    page.click("nav >> text=Budgets")
    page.fill("#scope_id", "anything")
    page.fill("#amount_usd", "1")
    page.click("form.inline button[type=submit]")
    expect(page.locator("#page-error")).to_contain_text("viewer")
    context.close()


def finance_flow(browser):
    """Finance lands on spend, is offered nothing else, and is refused policy pages."""
    context = browser.new_context()
    page = context.new_page()
    sign_in(page, os.environ["FINANCE_TOKEN"])
    expect(page).to_have_url(CONSOLE + "/spend")
    expect(page.locator("svg")).to_have_count(1)
    expect(page.locator("nav a")).to_have_count(1)
    shot(page, "22-finance")
    page.goto(CONSOLE + "/teams")
    expect(page.locator("#page-error")).to_contain_text("finance")
    context.close()


def main():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=os.environ["CHROMIUM"], args=["--no-sandbox"]
        )
        admin_flow(browser)
        viewer_flow(browser)
        finance_flow(browser)
        browser.close()
    print("DONE")


if __name__ == "__main__":
    main()
