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
    submit(page, "form", {"token": token})


def submit(page, form, fields):
    """Fills in `fields` of the form `form` (a selector) and submits it: each input's id with its
    text, or a drop-down's id with the option to choose ({"value": …} or {"label": …})."""
    for field, value in fields.items():
        if isinstance(value, dict):
            page.select_option("#" + field, **value)
        else:
            page.fill("#" + field, value)
    page.click(form + " button[type=submit]")


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
    submit(page, "form.inline", {"name": ""})
    expect(page.locator("#name-error")).to_be_visible()
    submit(page, "form.inline", {"name": "console-team"})
    expect(page.locator("tbody tr", has_text="console-team")).to_have_count(1)
    shot(page, "02-teams")
    # From the keyboard: the first Tab reaches the skip link, which leads past the menu.
    page.keyboard.press("Tab")
    expect(page.locator("a.skip")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_be_focused()

    # A key for it: the secret is shown once, and not on reload.
    page.click("nav >> text=Keys")
    submit(page, "form.inline", {"alias": "console-key", "team_id": {"label": "console-team"}})
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
    submit(page, "form.inline", {
        "scope": {"value": "team"},
        "scope_id": team_id,
        "amount_usd": "not-money",
    })
    expect(page.locator("#amount_usd-error")).to_be_visible()
    submit(page, "form.inline", {"scope_id": team_id, "amount_usd": "25", "thresholds": "80, 150"})
    expect(page.locator("#thresholds-error")).to_contain_text("100")
    submit(page, "form.inline", {
        "scope_id": team_id,
        "amount_usd": "25",
        "period": {"value": "daily"},
        "thresholds": "50, 80 %",
    })
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
    submit(page, "form.inline", {"team": {"label": "console-team"}})
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
    submit(page, "form.inline", {"email": ""})
    expect(page.locator("#email-error")).to_be_visible()
    submit(page, "form.inline", {
        "email": "ada@example.com",
        "user_team": {"label": "console-team"},
        "role": {"value": "finance"},
    })
    ada = page.locator("tbody tr", has_text="ada@example.com")
    expect(ada).to_contain_text("finance")
    ada.locator("select[name=role]").select_option("viewer")
    ada.locator("form.change button").click()
    expect(page.locator("tbody tr", has_text="ada@example.com").locator("td").nth(2)).to_have_text("viewer")
    shot(page, "10-users")
    page.click("nav >> text=Prices")
    submit(page, "form.inline", {"model": "console-model", "input": "1.5", "output": "six"})
    expect(page.locator("#price-error")).to_be_visible()
    submit(page, "form.inline", {"model": "console-model", "input": "1.5", "output": "6"})
    expect(page.locator("tbody tr", has_text="console-model")).to_contain_text("1.5")
    shot(page, "11-prices")
    page.click("nav >> text=Audit")
    expect(page.locator("tr[data-type='key.revoked']")).to_have_count(1)
    expect(page.locator("tr[data-type='key.revoked']")).to_contain_text("bootstrap")
    submit(page, "form.inline", {"type": "user."})
    expect(page.locator("tbody tr")).to_have_count(2)
    expect(page.locator("tr[data-type='user.updated']")).to_have_count(1)
    shot(page, "12-audit")
    page.click("nav >> text=Health")
    expect(page.locator("h1")).to_have_text("Deployment health")
    shot(page, "13-health")

    # A credential (its secret never shown again) and a deployment that uses it, served at once.
    page.click("nav >> text=Providers")
    credential_form = "form.inline:has(#credential_name)"
    submit(page, credential_form, {
        "credential_name": "console-aws",
        "credential_provider": {"value": "bedrock"},
        "aws_access_key_id": "AKIAEXAMPLEONLY",
    })
    expect(page.locator("#api_key-error")).to_contain_text("aws_secret_access_key")
    expect(page.locator("#credentials tbody tr", has_text="console-aws")).to_have_count(0)
    submit(page, credential_form, {
        "credential_name": "console-cred",
        "credential_provider": {"value": "openai_compatible"},
        "api_key": "sk-console-upstream-secret",
    })
    credentials = page.locator("#credentials tbody tr", has_text="console-cred")
    expect(credentials).to_contain_text("api_key")
    assert "sk-console-upstream-secret" not in page.content(), "the credential is on the page"
    deployment_form = "form.inline:has(#model_name)"
    deployment = {
        "model_name": "console-hosted",
        "deployment_provider": {"value": "openai_compatible"},
    }
    submit(page, deployment_form, deployment | {"api_base": "ftp://nowhere.example"})
    expect(page.locator(".error")).to_be_visible()
    deployment |= {
        "api_base": os.environ["UPSTREAM_URL"],
        "credential_id": {"label": "console-cred"},
    }
    submit(page, deployment_form, deployment)
    expect(page.locator("#deployments tbody tr", has_text="console-hosted")).to_contain_text("console-cred")
    shot(page, "14-providers")
    wait_for_status(os.environ["FIRST_KEY"], (200,), model="console-hosted")

    # A rate limit on the first key: one request a minute, enforced by the edge.
    page.click("nav >> text=Keys")
    first_key_id = page.locator("tbody tr", has_text="first-key").get_attribute("data-key")
    page.click("nav >> text=Limits")
    limit = {"limit_scope": {"value": "key"}, "limit_scope_id": first_key_id}
    submit(page, "form[action='/limits']", limit | {"rpm": "many"})
    expect(page.locator("#figures-error")).to_be_visible()
    submit(page, "form[action='/limits']", limit | {"rpm": "1"})
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
    schedule_form = "form[action='/limits/schedules']"
    schedule = {"schedule_limit": {"label": f"key {first_key_id}"}}
    submit(page, schedule_form, schedule | {"schedule_start": "10:00", "schedule_end": "10:00"})
    expect(page.locator("#window-error")).to_be_visible()
    now = datetime.now(timezone.utc)
    submit(page, schedule_form, schedule | {
        "schedule_start": (now - timedelta(hours=2)).strftime("%H:%M"),
        "schedule_end": (now + timedelta(hours=2)).strftime("%H:%M"),
        "schedule_rpm": "1000",
    })
    row = page.locator("tbody tr", has_text=first_key_id)
    expect(row.locator("td.schedules")).to_contain_text("1000 rpm")
    shot(page, "18-limit-schedule")
    wait_for_status(os.environ["FIRST_KEY"], (200,))

    # A guardrail: settings that are not JSON are refused next to them; a regex guardrail on
    # the hosted model blocks a prompt with the pattern on the edge.
    page.click("nav >> text=Guardrails")
    guardrail = {"guardrail_name": "no-secrets", "guardrail_kind": {"value": "regex"}}
    submit(page, "form[action='/guardrails']", guardrail | {"guardrail_config": "{not json"})
    expect(page.locator("#config_json-error")).to_be_visible()
    guardrail |= {
        "guardrail_models": "console-hosted",
        "guardrail_config": '{"patterns": ["project-x"], "action": "block"}',
    }
    submit(page, "form[action='/guardrails']", guardrail)
    expect(page.locator("tbody tr", has_text="no-secrets")).to_contain_text("project-x")
    shot(page, "19-guardrails")
    wait_for_status(os.environ["FIRST_KEY"], (400,), "console-hosted", "about project-x")
    assert chat(os.environ["FIRST_KEY"], "console-hosted")[0] == 200

    # Routing: a model cannot be its own fallback (said next to the fallbacks); a rule is set.
    # A traffic rule that does nothing is refused; one that denies the mock model is enforced.
    page.click("nav >> text=Routing")
    submit(page, "form[action='/routing']", {
        "rule_model": "console-hosted",
        "rule_fallbacks": "console-hosted",
    })
    expect(page.locator("#fallbacks-error")).to_be_visible()
    submit(page, "form[action='/routing']", {
        "rule_model": "console-hosted",
        "rule_strategy": {"value": "priority"},
        "rule_fallbacks": "mock",
        "rule_retries": "2",
    })
    expect(page.locator("tbody tr[data-routing=console-hosted]")).to_contain_text("priority")
    submit(page, "form[action='/traffic']", {"traffic_models": "mock"})
    expect(page.locator("#deny-error")).to_contain_text("does nothing")
    submit(page, "form[action='/traffic']", {
        "traffic_description": "close mock",
        "traffic_models": "mock",
        "traffic_deny": "mock is closed for this test",
    })
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
    submit(page, "form.inline", {"group_name": "", "group_models": "console-hosted"})
    expect(page.locator("#name-error")).to_be_visible()
    submit(page, "form.inline", {
        "group_name": "console-group",
        "group_models": "console-hosted, mock",
        "group_team": {"label": "console-team"},
    })
    row = page.locator("tbody tr", has_text="console-group")
    expect(row).to_contain_text("console-hosted, mock")
    expect(row).to_contain_text("console-team")
    shot(page, "16-access-groups")

    # A response cache policy for the hosted model (a zero lifetime is refused).
    page.click("nav >> text=Cache")
    policy = {"cache_model": "console-hosted"}
    submit(page, "form.inline", policy | {"ttl_seconds": "0"})
    expect(page.locator("#ttl_seconds-error")).to_be_visible()
    submit(page, "form.inline", policy | {"ttl_seconds": "600", "cache_scope": {"value": "global"}})
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


def signed_in(browser, token, home):
    """A page in a new browser context, signed in with `token`; returns (context, page) once it
    has landed on `home`."""
    context = browser.new_context()
    page = context.new_page()
    sign_in(page, token)
    expect(page).to_have_url(CONSOLE + home)
    return context, page


def viewer_flow(browser):
    context, page = signed_in(browser, os.environ["VIEWER_TOKEN"], "/teams")
    expect(page.locator("tbody tr", has_text="console-team")).to_have_count(1)
    submit(page, "form.inline", {"name": "viewer-team"})
    expect(page.locator("#page-error")).to_contain_text("viewer")
    expect(page.locator("tbody tr", has_text="viewer-team")).to_have_count(0)
    shot(page, "09-viewer-refused")
    page.click("nav >> text=Keys")
    submit(page, "form.inline", {"alias": "viewer-key"})
    expect(page.locator("#page-error")).to_contain_text("viewer")
    expect(page.locator("#new-secret")).to_have_count(0)
    page.click("nav >> text=Budgets")
    submit(page, "form.inline", {"scope_id": "anything", "amount_usd": "1"})
    expect(page.locator("#page-error")).to_contain_text("viewer")
    context.close()


def finance_flow(browser):
    """Finance lands on spend, is offered nothing else, and is refused policy pages."""
    context, page = signed_in(browser, os.environ["FINANCE_TOKEN"], "/spend")
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
