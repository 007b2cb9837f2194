"""Conversations: per user, searchable, kept across sessions; others' are invisible."""

from __future__ import annotations

import pytest

from tests.integration.users.conftest import ADMIN_PASSWORD, WebApp, sign_in

pytestmark = pytest.mark.integration


async def test_conversations_are_kept_per_user_and_searchable(webapp: WebApp) -> None:
    async with webapp.client() as admin:
        headers = {"x-csrf-token": await sign_in(admin, "admin", ADMIN_PASSWORD)}
        made = await admin.post(
            "/v1/conversations",
            json={
                "title": "Quarterly numbers",
                "model": "smollm2",
                "messages": [
                    {"role": "user", "content": "What is 100% of the budget_total?"},
                    {"role": "assistant", "content": "All of it.", "meta": {"model": "smollm2"}},
                ],
            },
            headers=headers,
        )
        assert made.status_code == 201, made.text
        conv = made.json()
        other = await admin.post(
            "/v1/conversations", json={"title": "Poems", "model": "smollm2"}, headers=headers
        )
        assert other.status_code == 201

        listed = (await admin.get("/v1/conversations")).json()["data"]
        assert [c["title"] for c in listed] == ["Poems", "Quarterly numbers"]
        assert "messages" not in listed[0]
        by_body = (await admin.get("/v1/conversations", params={"q": "BUDGET_total"})).json()
        assert [c["id"] for c in by_body["data"]] == [conv["id"]]
        by_title = (await admin.get("/v1/conversations", params={"q": "poem"})).json()
        assert [c["title"] for c in by_title["data"]] == ["Poems"]
        # LIKE wildcards in a query are literal characters.
        assert (await admin.get("/v1/conversations", params={"q": "100%"})).json()["data"]
        assert not (await admin.get("/v1/conversations", params={"q": "_%"})).json()["data"]

        renamed = await admin.patch(
            f"/v1/conversations/{conv['id']}", json={"title": "Q3 numbers"}, headers=headers
        )
        assert renamed.json()["title"] == "Q3 numbers"
        replaced = await admin.put(
            f"/v1/conversations/{conv['id']}/messages",
            json={"messages": [{"role": "user", "content": "Only this"}]},
            headers=headers,
        )
        assert replaced.status_code == 200
        whole = (await admin.get(f"/v1/conversations/{conv['id']}")).json()
        assert whole["messages"] == [{"role": "user", "content": "Only this", "meta": None}]
        listed = (await admin.get("/v1/conversations")).json()["data"]
        assert listed[0]["id"] == conv["id"]  # the latest change comes first

        bad = await admin.put(
            f"/v1/conversations/{conv['id']}/messages",
            json={"messages": [{"role": "tool", "content": "x"}]},
            headers=headers,
        )
        assert bad.status_code == 400
        assert bad.json()["error"]["param"] == "messages.0.role"
        unchanged = (await admin.get(f"/v1/conversations/{conv['id']}")).json()
        assert unchanged["messages"] == whole["messages"]

        gone = await admin.delete(f"/v1/conversations/{conv['id']}", headers=headers)
        assert gone.status_code == 200
        assert (await admin.get(f"/v1/conversations/{conv['id']}")).status_code == 404


async def test_another_users_conversation_does_not_exist_for_you(webapp: WebApp) -> None:
    async with webapp.client() as admin, webapp.client() as carol:
        headers = {"x-csrf-token": await sign_in(admin, "admin", ADMIN_PASSWORD)}
        await admin.post(
            "/v1/admin/users",
            json={"username": "carol", "password": "carol-password"},
            headers=headers,
        )
        mine = (
            await admin.post(
                "/v1/conversations", json={"title": "Mine", "model": "m"}, headers=headers
            )
        ).json()
        carol_headers = {"x-csrf-token": await sign_in(carol, "carol", "carol-password")}
        assert (await carol.get("/v1/conversations")).json()["data"] == []
        assert (await carol.get(f"/v1/conversations/{mine['id']}")).status_code == 404
        deleted = await carol.delete(f"/v1/conversations/{mine['id']}", headers=carol_headers)
        assert deleted.status_code == 404
        assert (await admin.get(f"/v1/conversations/{mine['id']}")).status_code == 200


async def test_conversations_need_a_session_and_valid_input(webapp: WebApp) -> None:
    async with webapp.client() as client:
        with_key = await client.get(
            "/v1/conversations", headers={"authorization": f"Bearer {webapp.api_key}"}
        )
        assert with_key.status_code == 403
        headers = {"x-csrf-token": await sign_in(client, "admin", ADMIN_PASSWORD)}
        no_model = await client.post("/v1/conversations", json={}, headers=headers)
        assert no_model.status_code == 400
        assert no_model.json()["error"]["param"] == "model"
        too_long = await client.get("/v1/conversations", params={"limit": "1000"})
        assert too_long.status_code == 400
        not_json = await client.post("/v1/conversations", content=b"{nope", headers=headers)
        assert not_json.status_code == 400


CITATION = {
    "number": 1,
    "document_id": "doc_1",
    "chunk_id": "chk_1",
    "title": "Handbook",
    "section": "Leave",
    "page": None,
    "score": 0.91,
    "snippet": "Staff get 30 days of leave.",
    "link": "https://intranet.example/handbook#leave",
    "uri": "handbook.md",
    "text": "Handbook\nStaff get 30 days of leave.",
}


async def test_an_answer_keeps_its_citations(webapp: WebApp) -> None:
    async with webapp.client() as client:
        headers = {"x-csrf-token": await sign_in(client, "admin", ADMIN_PASSWORD)}
        answer = {
            "role": "assistant",
            "content": "30 days [1].",
            "meta": {"model": "rag/hr", "query_id": "q_1", "citations": [CITATION]},
        }
        made = await client.post(
            "/v1/conversations",
            json={"model": "rag/hr", "messages": [{"role": "user", "content": "Leave?"}, answer]},
            headers=headers,
        )
        assert made.status_code == 201, made.text
        read = (await client.get(f"/v1/conversations/{made.json()['id']}")).json()
        assert read["messages"][1]["meta"] == answer["meta"]
        # What was read back is accepted as it is (the UI saves the whole list again).
        again = await client.put(
            f"/v1/conversations/{made.json()['id']}/messages",
            json={"messages": read["messages"]},
            headers=headers,
        )
        assert again.status_code == 200, again.text

        nested = {**answer, "meta": {"model": {"nested": True}}}
        bad = await client.put(
            f"/v1/conversations/{made.json()['id']}/messages",
            json={"messages": [nested]},
            headers=headers,
        )
        assert bad.status_code == 400
        wrong = {**answer, "meta": {"citations": [{**CITATION, "score": "high"}]}}
        bad = await client.put(
            f"/v1/conversations/{made.json()['id']}/messages",
            json={"messages": [wrong]},
            headers=headers,
        )
        assert bad.status_code == 400
        assert bad.json()["error"]["param"].startswith("messages.0.meta.citations.0.score")
        twenty = {**answer, "meta": {f"k{i}": i for i in range(20)}}
        fits = await client.put(
            f"/v1/conversations/{made.json()['id']}/messages",
            json={"messages": [twenty]},
            headers=headers,
        )
        assert fits.status_code == 200, fits.text
        many = {**answer, "meta": {**twenty["meta"], "citations": [CITATION]}}
        bad = await client.put(
            f"/v1/conversations/{made.json()['id']}/messages",
            json={"messages": [many]},
            headers=headers,
        )
        assert bad.status_code == 400
