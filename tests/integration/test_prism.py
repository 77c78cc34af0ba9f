"""Prism on a real lab (`invoke lab.serve`), driven by real clients: the official Nutanix v4 SDKs
(the current ones and 4.0.x), v3 and v2.0 calls, acli beside them; users kept apart by lab and
role. The guest a client made is checked from inside; what it deleted is gone from OVS and
libvirt. Tests run in file order against one lab and one server."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from labkit import commands
from labkit.host.agent import Agent

from ..conftest import REPO
from .conftest import invoke, labkit_leftovers, sh

LAB, OTHER = "prism", "prism-b"
FLOW = str(REPO / "tests/integration/prism_flow.py")
SDK40 = REPO / ".venv" / "sdk-4.0"
PASSWORD = f"/run/labkit/{LAB}/admin.password"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, *args: str):
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, "-m", "invoke", "lab.serve", "--port", str(self.port), *args],
                                     cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.scheme = "http" if "--insecure-http" in args else "https"
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                assert self.proc.poll() is None, self.proc.stdout.read()
                assert time.monotonic() < deadline, "lab.serve did not listen within 30 s"
                time.sleep(0.1)

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            out, _ = self.proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
            raise AssertionError("lab.serve did not stop on Ctrl-C")
        return out


@pytest.fixture(scope="module")
def labs():
    for lab in (LAB, OTHER):
        invoke("lab.down", "--lab", lab)
    invoke("lab.up", "--topology", str(REPO / "tests/topologies/prism.yaml"))
    invoke("lab.up", "--topology", str(REPO / "tests/topologies/prism-b.yaml"), "--no-verify")
    yield
    for lab in (LAB, OTHER):
        invoke("lab.down", "--lab", lab)
        assert labkit_leftovers(lab) == []


@pytest.fixture(scope="module")
def server(labs):
    srv = Server("--insecure-http")
    yield srv
    out = srv.stop()
    assert "Traceback" not in out, out


def request(srv: Server, method: str, path: str, body=None, user="admin", password=None, headers=None):
    """(status, JSON body, headers) of one call."""
    password = password if password is not None else open(PASSWORD).read().strip()
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"{srv.scheme}://127.0.0.1:{srv.port}{path}", data=data, method=method,
                                 headers={"Authorization": f"Basic {auth}", "Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read() or b"null"), resp.headers
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null"), exc.headers


def flow(srv: Server, *args: str, sdk40: bool = False) -> dict:
    env = dict(os.environ)
    if sdk40:
        env["PYTHONPATH"] = str(SDK40)
    run = subprocess.run([sys.executable, FLOW, *args, "--port", str(srv.port), "--password-file", PASSWORD],
                         capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    return json.loads(run.stdout.splitlines()[-1])


def guest(vm: str, command: str) -> str:
    dom = commands.find_domain(f"/run/labkit/{LAB}/effective/topology.yaml", vm)
    with Agent(dom.name, dom.agent_socket) as agent:
        agent.wait_boot(120)
        return agent.run(command, timeout=30).output


def port_of(mac: str) -> str | None:
    """The OVS interface libvirt made for the NIC with this MAC, if any."""
    return sh(f"ovs-vsctl --bare --columns=name find Interface 'external_ids:attached-mac=\"{mac}\"'").strip() or None


@pytest.mark.parametrize("sdk40", [False, True], ids=["sdk-current", "sdk-4.0"])
def test_the_official_sdks_drive_the_lab(server, sdk40):
    vlan, vm = (61, "sdkold") if sdk40 else (60, "sdkvm")
    made = flow(server, "create", "--vlan", str(vlan), "--vm", vm, sdk40=sdk40)
    assert made["cluster"] == LAB and made["hosts"] == ["node1"] and made["found"] == [made["subnet"]]
    assert made["power"] == "ON" and made["ip"] == f"10.{vlan}.0.100"
    assert [t["status"] for t in made["tasks"]] == ["SUCCEEDED"] * 3
    # the guest holds its pool address by DHCP, from its node's server on the new VLAN
    for _ in range(60):
        if f"inet {made['ip']}/24" in guest(vm, "ip -4 -o addr show eth0"):
            break
        time.sleep(0.5)
    assert f"inet {made['ip']}/24" in guest(vm, "ip -4 -o addr show eth0")
    assert f"server=10.{vlan}.0.254" in guest(vm, "cat /run/dhcp.eth0")
    port = port_of(made["mac"])
    assert port and sh(f"ovs-vsctl get Port {port} tag").strip() == str(vlan)
    # acli sees what the API made
    assert made["ip"] in invoke("acli", "--lab", LAB, "-c", f"net.list_vms sdk-vlan{vlan}").stdout
    done = flow(server, "finish", "--vm-id", made["vm"], "--subnet-id", made["subnet"], sdk40=sdk40)
    assert (done["stale"], done["missing"], done["memory"]) == (412, 428, 192)
    assert vm not in done["vms_left"] and [t["status"] for t in done["tasks"]] == ["SUCCEEDED"] * 4
    assert vm not in sh("virsh -c qemu:///system list --all --name").split()
    assert port_of(made["mac"]) is None
    assert f"sdk-vlan{vlan}" not in sh("virsh -c qemu:///system net-dumpxml VM-Network")


def test_v2_and_v3_list_what_v4_lists_and_acli_and_the_api_agree(server):
    invoke("acli", "--lab", LAB, "-c", "net.create legacy vlan=62 ip_config=10.62.0.1/24")
    invoke("acli", "--lab", LAB, "-c", "net.add_dhcp_pool legacy start=10.62.0.10 end=10.62.0.20")
    status, v4, _ = request(server, "GET", "/api/networking/v4.0/config/subnets")
    assert status == 200
    names_v4 = {s["name"]: s["extId"] for s in v4["data"]}
    _, v3, _ = request(server, "POST", "/api/nutanix/v3/subnets/list", {"kind": "subnet", "length": 50})
    _, v2, _ = request(server, "GET", "/PrismGateway/services/rest/v2.0/networks")
    assert {e["status"]["name"]: e["metadata"]["uuid"] for e in v3["entities"]} == names_v4
    assert {e["name"]: e["uuid"] for e in v2["entities"]} == names_v4
    assert v3["metadata"]["total_matches"] == len(names_v4) and "legacy" in names_v4
    # a VM made through v3 (Ansible's legacy modules, Terraform's v1 resources): acli lists it
    spec = {"spec": {"name": "v3vm", "resources": {"num_sockets": 1, "memory_size_mib": 128, "nic_list": [
        {"subnet_reference": {"kind": "subnet", "uuid": names_v4["legacy"]}}]}}, "metadata": {"kind": "vm"}}
    status, accepted, _ = request(server, "POST", "/api/nutanix/v3/vms", spec)
    assert status == 202 and accepted["status"]["state"] == "PENDING"
    task_uuid = accepted["status"]["execution_context"]["task_uuid"]
    for _ in range(300):
        _, task, _ = request(server, "GET", f"/api/nutanix/v3/tasks/{task_uuid}")
        if task["status"] in ("SUCCEEDED", "FAILED"):
            break
        time.sleep(0.2)
    assert task["status"] == "SUCCEEDED", task
    assert "v3vm" in invoke("acli", "--lab", LAB, "-c", "vm.list").stdout
    _, vms_v2, _ = request(server, "GET", "/PrismGateway/services/rest/v2.0/vms")
    v2vm = next(v for v in vms_v2["entities"] if v["name"] == "v3vm")
    assert v2vm["vm_nics"][0]["ip_address"] == "10.62.0.10"
    # v2.0 powers it on; v4 sees it on, with its ETag moved
    _, before, headers = request(server, "GET", f"/api/vmm/v4.0/ahv/config/vms/{v2vm['uuid']}")
    status, answer, _ = request(server, "POST", f"/PrismGateway/services/rest/v2.0/vms/{v2vm['uuid']}/set_power_state",
                                {"transition": "on"})
    assert status == 200
    for _ in range(300):
        _, task, _ = request(server, "GET", f"/PrismGateway/services/rest/v2.0/tasks/{answer['task_uuid']}")
        if task["progress_status"] in ("Succeeded", "Failed"):
            break
        time.sleep(0.2)
    assert task["progress_status"] == "Succeeded", task
    _, after, headers2 = request(server, "GET", f"/api/vmm/v4.0/ahv/config/vms/{v2vm['uuid']}")
    assert after["data"]["powerState"] == "ON" and headers2["ETag"] != headers["ETag"]
    invoke("acli", "--lab", LAB, "-y", "-c", "vm.delete v3vm")
    _, gone, _ = request(server, "GET", f"/api/vmm/v4.0/ahv/config/vms/{v2vm['uuid']}")
    assert gone["data"]["error"][0]["message"].startswith("VM ")


def test_each_user_sees_only_their_lab_and_a_viewer_changes_nothing(server):
    echo = subprocess.run([sys.executable, "-m", "invoke", "lab.users", "--lab", LAB, "add", "trainee", "--role", "viewer"],
                          input="trainee-pw-1\n", cwd=REPO, capture_output=True, text=True)
    assert echo.returncode == 0, echo.stderr
    other_admin = open(f"/run/labkit/{OTHER}/admin.password").read().strip()
    # lab B's admin: lab B's objects, never lab A's (404, not 403)
    _, mine, _ = request(server, "GET", "/api/vmm/v4.0/ahv/config/vms", user="admin", password=other_admin)
    hidden = next(v for v in mine["data"] if v["name"] == "hidden")
    status, body, _ = request(server, "GET", f"/api/vmm/v4.0/ahv/config/vms/{hidden['extId']}")  # lab A's admin
    assert status == 404 and body["data"]["$objectType"] == "vmm.v4.error.ErrorResponse"
    _, clusters, _ = request(server, "GET", "/api/clustermgmt/v4.0/config/clusters")
    assert [c["name"] for c in clusters["data"]] == [LAB]
    # a wrong password: 401; repeated, slowed down
    assert request(server, "GET", "/api/vmm/v4.0/ahv/config/vms", password="nope")[0] == 401
    for _ in range(3):
        request(server, "GET", "/api/vmm/v4.0/ahv/config/vms", user="nobody", password="nope")
    started = time.monotonic()
    assert request(server, "GET", "/api/vmm/v4.0/ahv/config/vms", user="nobody", password="nope")[0] == 401
    assert time.monotonic() - started >= 0.2
    # a viewer reads, and every change is 403
    status, vms, _ = request(server, "GET", "/api/vmm/v4.0/ahv/config/vms", user="trainee", password="trainee-pw-1")
    assert status == 200
    _, subnets, _ = request(server, "GET", "/api/networking/v4.0/config/subnets", user="trainee", password="trainee-pw-1")
    subnet = subnets["data"][0]["extId"]
    vm = (vms.get("data") or [{"extId": "00000000-0000-4000-8000-000000000000"}])[0]["extId"]
    changes = [("POST", "/api/networking/v4.0/config/subnets", {"name": "x", "networkId": 5}),
               ("PUT", f"/api/networking/v4.0/config/subnets/{subnet}", {"name": "x", "networkId": 5}),
               ("DELETE", f"/api/networking/v4.0/config/subnets/{subnet}", None),
               ("POST", "/api/vmm/v4.0/ahv/config/vms", {"name": "x"}),
               ("POST", f"/api/vmm/v4.0/ahv/config/vms/{vm}/$actions/power-on", None),
               ("POST", "/api/nutanix/v3/vms", {"spec": {"name": "x"}}),
               ("POST", "/PrismGateway/services/rest/v2.0/networks", {"name": "x", "vlan_id": 5})]
    for method, path, body in changes:
        assert request(server, method, path, body, user="trainee", password="trainee-pw-1")[0] == 403, (method, path)
    # credentials are root's alone
    for path in (f"/run/labkit/{LAB}/users.json", PASSWORD):
        st = os.stat(path)
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o600), path


def test_errors_are_prism_s_shape_and_never_a_500_for_bad_input(server):
    cases = [("GET", "/api/networking/v9.1/config/subnets", None, 404),
             ("GET", "/api/networking/v4.4/config/subnets?$filter=name%20frob%201", None, 400),
             ("GET", "/api/networking/v4.4/config/subnets?$limit=1000", None, 400),
             ("POST", "/api/networking/v4.4/config/subnets", {"name": "bad", "networkId": "ten"}, 400),
             ("POST", "/api/networking/v4.4/config/subnets", {"name": "bad\nname", "networkId": 63}, 400),
             ("POST", "/api/networking/v4.4/config/subnets", {"name": "dns", "networkId": 63, "ipConfig": [{"ipv4": {
                 "ipSubnet": {"ip": {"value": "10.63.0.0"}, "prefixLength": 24}, "defaultGatewayIp": {"value": "10.63.0.1"}}}],
                 "dhcpOptions": {"domainName": "lab.local\ndhcp-script=/x"}}, 400),
             ("POST", "/api/vmm/v4.4/ahv/config/vms", {"name": "big", "memorySizeBytes": -5}, 400),
             ("GET", "/api/prism/v4.4/config/tasks/ZXJnb24%3D%3Anot-a-task", None, 404)]
    for method, path, body, want in cases:
        status, answer, _ = request(server, method, path, body)
        assert status == want, (method, path, status, answer)
        message = answer["data"]["error"][0]["message"]
        assert "\n" not in message and len(message) < 400 and answer["data"]["error"][0]["$objectType"].endswith("AppMessage")
    status, answer, _ = request(server, "POST", "/api/networking/v4.4/config/subnets",
                                {"name": "dns", "networkId": 63, "dhcpOptions": {"domainName": "lab.local\ndhcp-script=/x"},
                                 "ipConfig": [{"ipv4": {"ipSubnet": {"ip": {"value": "10.63.0.0"}, "prefixLength": 24},
                                                        "defaultGatewayIp": {"value": "10.63.0.1"}}}]})
    assert "is not a DNS name" in answer["data"]["error"][0]["message"]


def test_https_with_the_certificate_labkit_makes_once(labs):
    srv = Server()
    try:
        cert, key = "/var/lib/labkit/prism/server.crt", "/var/lib/labkit/prism/server.key"
        assert stat.S_IMODE(os.stat(key).st_mode) == 0o600 and os.stat(key).st_uid == 0
        made = os.stat(cert).st_mtime_ns
        import ssl

        ctx = ssl.create_default_context(cafile=cert)
        password = open(PASSWORD).read().strip()
        req = urllib.request.Request(f"https://127.0.0.1:{srv.port}/api/clustermgmt/v4.4/config/clusters",
                                     headers={"Authorization": "Basic " + base64.b64encode(f"admin:{password}".encode()).decode()})
        with urllib.request.urlopen(req, context=ctx, timeout=30) as resp:
            assert json.loads(resp.read())["data"][0]["name"] == LAB and "set-cookie" not in resp.headers
    finally:
        srv.stop()
    Server().stop()
    assert os.stat(cert).st_mtime_ns == made  # kept, not made again


def test_fuzzing_the_openapi_document_finds_no_5xx_and_no_answer_off_its_schema(server):
    """schemathesis, from the server's own OpenAPI document: a few hundred requests over every
    operation, checked for 5xx, for answers off their declared schema, for undocumented codes."""
    password = open(PASSWORD).read().strip()
    auth = base64.b64encode(f"admin:{password}".encode()).decode()
    run = subprocess.run([str(REPO / ".venv/bin/schemathesis"), "run", f"http://127.0.0.1:{server.port}/api/openapi.json",
                          "-H", f"Authorization: Basic {auth}", "-n", "5", "--seed", "17", "--request-timeout", "60",
                          "-c", "not_a_server_error,response_schema_conformance,status_code_conformance"],
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-4000:]
    import re

    generated = int(re.search(r"(\d+) generated", run.stdout).group(1))
    assert generated >= 300, run.stdout[-2000:]


def test_the_web_page_in_a_real_browser(server):
    """Debian's Chromium, headless, through selenium and the system chromedriver (nothing downloaded):
    log in, create a VM on a managed network, power it on, see it running with its address and in
    the diagram. LABKIT_SCREENSHOT=PATH keeps a picture of the page (docs/prism.png)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import Select, WebDriverWait

    invoke("acli", "--lab", LAB, "-c", "net.create web vlan=64 ip_config=10.64.0.1/24")
    invoke("acli", "--lab", LAB, "-c", "net.add_dhcp_pool web start=10.64.0.50 end=10.64.0.60")
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,1800", f"--user-data-dir=/tmp/labkit-chromium-{os.getpid()}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    wait = WebDriverWait(driver, 90)
    base = f"http://127.0.0.1:{server.port}"
    try:
        driver.get(f"{base}/")  # not logged in: the login page
        wait.until(ready.presence_of_element_located((By.ID, "login")))
        driver.find_element(By.ID, "user").send_keys("admin")
        driver.find_element(By.ID, "password").send_keys("wrong-password")
        driver.find_element(By.ID, "submit").click()
        assert "wrong user name or password" in wait.until(ready.presence_of_element_located((By.ID, "error"))).text
        driver.find_element(By.ID, "user").send_keys("admin")
        driver.find_element(By.ID, "password").send_keys(open(PASSWORD).read().strip())
        driver.find_element(By.ID, "submit").click()
        assert wait.until(ready.presence_of_element_located((By.ID, "cluster"))).text == LAB
        wait.until(lambda d: "web (10.64.0.0/24)" in d.find_element(By.ID, "vm-network").text)
        driver.find_element(By.ID, "vm-name").send_keys("webvm")
        Select(driver.find_element(By.ID, "vm-network")).select_by_visible_text("web (10.64.0.0/24)")
        driver.find_element(By.CSS_SELECTOR, "#create-vm button").click()
        row = '#vms tr[data-name="webvm"]'
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, f'{row} button[data-act="power-on"]'))
        driver.find_element(By.CSS_SELECTOR, f'{row} button[data-act="power-on"]').click()
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, f"{row} td:nth-child(2)").text == "on")
        assert driver.find_element(By.CSS_SELECTOR, f"{row} td.ip").text == "10.64.0.50"
        svg = driver.execute_async_script(
            "const done = arguments[0]; fetch('/ui/diagram.svg').then(r => r.text()).then(done)")
        assert "webvm" in svg
        for _ in range(60):  # the guest boots, then takes its address by DHCP
            if "inet 10.64.0.50/24" in guest("webvm", "ip -4 -o addr show eth0"):
                break
            time.sleep(0.5)
        assert "inet 10.64.0.50/24" in guest("webvm", "ip -4 -o addr show eth0")
        if os.environ.get("LABKIT_SCREENSHOT"):
            time.sleep(2.5)  # the diagram redrawn with the VM
            driver.save_screenshot(os.environ["LABKIT_SCREENSHOT"])
        # a change with the session cookie but without the page's header is refused (another site's form)
        status = driver.execute_async_script(
            "const done = arguments[0]; fetch('/api/vmm/v4.0/ahv/config/vms', {method: 'POST', body: '{}', "
            "headers: {'Content-Type': 'application/json'}}).then(r => done(r.status))")
        assert status == 403
    finally:
        driver.quit()
        subprocess.run(["rm", "-rf", f"/tmp/labkit-chromium-{os.getpid()}"])
    invoke("acli", "--lab", LAB, "-y", "-c", "vm.delete webvm")
