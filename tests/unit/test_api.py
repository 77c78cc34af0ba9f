"""Prism's HTTP layer without a host: two labs' effective states in a temporary run directory,
FastAPI's test client, and a job queue that records what it was asked instead of applying it
(tests/integration/test_prism.py applies them, on real labs, with the official SDKs).

What is decided here: who may ask (401, a lab's users only, 404 for another lab's objects, 403
for a viewer's change), ETags and If-Match (428, 412), list queries, Prism's shapes and error
body, and that a request the control plane refuses is a 4xx before any task is queued."""

from __future__ import annotations

import base64
import time

import pytest
from fastapi.testclient import TestClient

from labkit import pipeline, state, tasklog, topology, users
from labkit.api import app as app_mod
from labkit.api import query, shapes
from labkit.api.auth import Authenticator

from ..conftest import REPO


class Recorder:
    """Stands in for the job queue: queues a task record, applies nothing."""

    def __init__(self):
        self.asked = []

    def change(self, who, make, operation, entities=(), before=None):
        self.asked.append((who.lab, operation))
        return tasklog.put(who.lab, tasklog.new(operation, entities, who.user, "api"))

    def action(self, who, act, operation, entities=()):
        return self.change(who, None, operation, entities)


def saved(lab_file: str) -> str:
    topo = topology.load(str(REPO / lab_file))
    addr = pipeline.addressed(topo, None)
    state.save_effective(topo.name, state.Effective(state.topology_yaml(topo.name, addr.topo).encode(),
                                                    addr.assigned.ledger.to_json().encode(), b"{}"))
    return topo.name


@pytest.fixture
def api(tmp_path, monkeypatch):
    monkeypatch.setattr(state, "RUN_DIR", tmp_path)
    a, b = saved("tests/topologies/prism.yaml"), saved("tests/topologies/prism-b.yaml")
    users.add(a, "admin", "admin-pw-1", "admin")
    users.add(a, "viewer", "viewer-pw-1", "viewer")
    users.add(b, "admin", "other-pw-1", "admin")
    context = app_mod.Context()
    context.jobs = Recorder()
    with TestClient(app_mod.create_app(context)) as client:
        yield client, context.jobs


def auth(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


ADMIN, VIEWER, OTHER = auth("admin", "admin-pw-1"), auth("viewer", "viewer-pw-1"), auth("admin", "other-pw-1")


def test_a_lab_is_a_cluster_and_its_users_see_it_alone(api):
    client, _ = api
    clusters = client.get("/api/clustermgmt/v4.3/config/clusters", headers=ADMIN).json()
    assert [(c["name"], c["config"]["clusterFunction"], c["$objectType"]) for c in clusters["data"]] == \
        [("prism", ["AOS"], "clustermgmt.v4.config.Cluster")]
    hosts = client.get("/api/clustermgmt/v4.0/config/hosts", headers=ADMIN).json()["data"]
    assert hosts[0]["cluster"] == {"uuid": clusters["data"][0]["extId"], "name": "prism"}
    hidden = next(v for v in client.get("/api/vmm/v4.4/ahv/config/vms", headers=OTHER).json()["data"] if v["name"] == "hidden")
    answer = client.get(f"/api/vmm/v4.4/ahv/config/vms/{hidden['extId']}", headers=ADMIN)
    assert answer.status_code == 404 and answer.json()["data"]["$objectType"] == "vmm.v4.error.ErrorResponse"
    assert "data" not in client.get("/api/vmm/v4.4/ahv/config/vms", headers=ADMIN).json()  # an empty list: no data
    assert client.options("/api/vmm/unversioned/info").json() == {"data": "v4.4"}


def test_credentials_and_roles(api):
    client, jobs = api
    assert client.get("/api/vmm/v4.4/ahv/config/vms").status_code == 401
    wrong = client.get("/api/vmm/v4.4/ahv/config/vms", headers=auth("admin", "nope"))
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == 'Basic realm="labkit"'
    assert "set-cookie" not in wrong.headers and "set-cookie" not in client.get("/api/vmm/v4.4/ahv/config/vms", headers=ADMIN).headers
    body = {"name": "n", "networkId": 5}
    assert client.post("/api/networking/v4.4/config/subnets", json=body, headers=VIEWER).status_code == 403
    assert jobs.asked == []
    assert client.post("/api/networking/v4.4/config/subnets", json=body, headers=auth("admin@prism", "admin-pw-1")).status_code == 202
    assert jobs.asked == [("prism", "NetworkCreate")]
    key = users.new_key("prism", "viewer")
    assert client.get("/api/vmm/v4.4/ahv/config/vms", headers={"X-ntnx-api-key": key}).status_code == 200


def test_repeated_bad_passwords_are_slowed_down_and_a_success_forgets_them():
    auth_ = Authenticator()
    delays = []
    for _ in range(6):
        try:
            auth_.password("someone", "nope", "10.0.0.9")
        except Exception as exc:  # Unauthorized
            delays.append(exc.delay)
    assert delays == [0, 0, 0, 0.25, 0.5, 1.0]


def test_etags_and_if_match(api):
    client, jobs = api
    subnets = client.get("/api/networking/v4.4/config/subnets", headers=ADMIN).json()["data"]
    subnet = subnets[0]
    got = client.get(f"/api/networking/v4.4/config/subnets/{subnet['extId']}", headers=ADMIN)
    etag = got.headers["etag"]
    assert etag == got.json()["data"]["$reserved"]["ETag"]  # the header and $reserved, for the SDK's get_etag
    body = got.json()["data"]
    assert client.put(f"/api/networking/v4.4/config/subnets/{subnet['extId']}", json=body, headers=ADMIN).status_code == 428
    stale = client.put(f"/api/networking/v4.4/config/subnets/{subnet['extId']}", json=body, headers={**ADMIN, "If-Match": "0"})
    assert stale.status_code == 412
    assert client.put(f"/api/networking/v4.4/config/subnets/{subnet['extId']}", json=body,
                      headers={**ADMIN, "If-Match": etag}).status_code == 202
    assert client.delete(f"/api/networking/v4.4/config/subnets/{subnet['extId']}", headers=ADMIN).status_code == 202  # Terraform


def test_a_refused_change_is_a_4xx_before_any_task(api):
    client, jobs = api
    cases = [({"name": "n", "networkId": 0}, 409),  # vlan0 carries VLAN 0 on br0 already
             ({"name": "vlan0", "networkId": 7}, 409),
             ({"name": "bad name", "networkId": 7}, 400),
             ({"name": "n", "networkId": 7, "ipConfig": [{"ipv4": {"ipSubnet": {"ip": {"value": "10.7.0.0"}, "prefixLength": 24},
                                                                   "defaultGatewayIp": {"value": "10.8.0.1"}}}]}, 400),
             ({"name": "n", "networkId": 7, "ipConfig": [{"ipv4": {"ipSubnet": {"ip": {"value": "10.0.0.0"}, "prefixLength": 8},
                                                                   "defaultGatewayIp": {"value": "10.0.0.1"}}}]}, 400)]
    for body, status in cases:
        answer = client.post("/api/networking/v4.4/config/subnets", json=body, headers=ADMIN)
        assert answer.status_code == status, (body, answer.json())
        message = answer.json()["data"]["error"][0]["message"]
        assert "\n" not in message and len(message) < 400
    assert jobs.asked == []


def test_tasks_are_served_by_their_prism_ids(api):
    client, _ = api
    task = tasklog.finished("prism", tasklog.put("prism", tasklog.new("VmCreate", (tasklog.Entity("u", "vmm:ahv:config:vm"),))))
    got = client.get(f"/api/prism/v4.4/config/tasks/ZXJnb24%3D%3A{task.uuid}", headers=ADMIN).json()["data"]
    assert got["status"] == "SUCCEEDED" and got["entitiesAffected"] == [{"extId": "u", "rel": "vmm:ahv:config:vm", "name": ""}]
    assert got["completedTime"].endswith("Z") and time.strptime(got["completedTime"][:19], "%Y-%m-%dT%H:%M:%S")
    assert client.get(f"/api/prism/v4.4/config/tasks/ZXJnb24=:{task.uuid}", headers=OTHER).status_code == 404


def test_a_subnet_reads_back_as_its_spec():
    """What a GET shows of a managed network is what a POST of it asks for (the SDK's update round trip)."""
    from labkit.control import Control

    topo = topology.load(str(REPO / "examples/slb-vlans.yaml"))
    ctl = Control(topo)
    net = ctl.network("mgmt")
    shaped = shapes.subnet("slb", net)
    name, vlan, bridge, managed = shapes.subnet_spec(shaped, ctl)
    assert (name, vlan, bridge) == ("mgmt", 40, "br0")
    assert managed == {"network": "10.40.0.0/24", "gateway": "10.40.0.1", "pool": ["10.40.0.50 10.40.0.99"],
                       "dhcp_server": "10.40.0.254"}


def test_list_queries():
    entities = [{"name": "web1", "networkId": 10}, {"name": "db", "networkId": 20}, {"name": "web2", "networkId": 30}]
    assert query.select(entities, {"$filter": "startswith(name,'web') and networkId gt 15"}) == ([entities[2]], 1)
    assert query.select(entities, {"$orderby": "networkId desc", "$limit": "2", "$page": "1"}) == ([entities[0]], 3)
    assert query.select(entities, {"$filter": "not (name eq 'db')"})[1] == 2
    for bad in ("name", "name eq", "name ~ 1", "(name eq 'x'", "frob(name,'x')"):
        with pytest.raises(shapes.BadRequest, match=r"^\$filter: "):
            query.select(entities, {"$filter": bad})
    with pytest.raises(shapes.BadRequest, match=r"^\$limit='0' must be a number from 1 to 100$"):
        query.select(entities, {"$limit": "0"})
