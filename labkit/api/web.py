"""The web page at `/`: log in as a lab's user, then a Prism-Element-like view of the lab (hosts,
VMs with power state, address and network, networks with their pools and leases, the diagram,
recent tasks), updated every two seconds without a reload; an admin powers VMs on and off,
creates and deletes them. Server-rendered (jinja2), with a little plain JavaScript that calls the
same v4 API the SDKs do (no build step, nothing from a CDN: the page works offline).

A login makes a session cookie (HttpOnly, SameSite=Strict, Secure over HTTPS) that this server
accepts back; a change made with it must also carry the header X-Labkit-UI (a cross-site form
cannot set one)."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import jinja2
from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from .. import state, tasklog
from ..host import dhcp
from .app import ApiError, principal, view_of
from .auth import Principal, Unauthorized

HERE = Path(__file__).resolve().parent
_env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(HERE / "templates")), autoescape=True,
                          undefined=jinja2.StrictUndefined)
COOKIE = "labkit_session"
_diagrams: dict[str, tuple[str, float, bytes]] = {}


def router() -> APIRouter:
    r = APIRouter(include_in_schema=False)

    @r.get("/login", response_class=HTMLResponse)
    def login_page(error: str = ""):
        return _env.get_template("login.html.j2").render(error=error)

    @r.post("/login")
    async def login(request: Request, user: str = Form(""), password: str = Form("")):
        context = request.app.state.context
        client = request.client.host if request.client else "-"
        try:
            who = await asyncio.to_thread(context.auth.password, user, password, client)
        except Unauthorized as exc:
            if exc.delay:
                await asyncio.sleep(exc.delay)
            page = _env.get_template("login.html.j2").render(error=str(exc))
            return HTMLResponse(page, status_code=401)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(COOKIE, context.auth.session(who), httponly=True, samesite="strict",
                            secure=request.url.scheme == "https", path="/")
        return response

    @r.post("/logout")
    def logout(request: Request):
        request.app.state.context.auth.end(request.cookies.get(COOKIE, ""))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    @r.get("/", response_class=HTMLResponse)
    async def page(request: Request):
        try:
            who = await principal(request)
        except ApiError:
            return RedirectResponse("/login", status_code=303)
        return _env.get_template("lab.html.j2").render(who=who, data=_state(request, who))

    @r.get("/ui/state")
    def ui_state(request: Request, who: Principal = Depends(principal)):
        return JSONResponse(_state(request, who))

    @r.get("/ui/diagram.svg")
    def diagram(request: Request, who: Principal = Depends(principal)):
        return Response(_diagram(who.lab), media_type="image/svg+xml")

    @r.get("/ui/labkit.js")
    def script():
        return Response((HERE / "static" / "labkit.js").read_bytes(), media_type="text/javascript")

    @r.get("/ui/labkit.css")
    def style():
        return Response((HERE / "static" / "labkit.css").read_bytes(), media_type="text/css")

    return r


def _state(request: Request, who: Principal) -> dict:
    """The lab as the page shows it."""
    view = view_of(request, who)
    ctl = view.ctl
    leases = _leases(who.lab)
    nets = [{"name": n.name, "uuid": n.uuid, "vlan": n.vlan_id, "managed": n.managed,
             "subnet": str(n.ip_config.network) if n.ip_config else "", "gateway": str(n.ip_config.gateway) if n.ip_config else "",
             "pools": [p["range"] for p in n.v2()["ip_config"]["pool"]],
             "free": sum(p["num_free_ips"] for p in n.v2()["ip_config"]["pool"]),
             "leases": [lease for lease in leases if n.ip_config and lease["ip"] in {str(a) for a in n.assigned}]}
            for n in ctl.networks()]
    vms = [{"name": v.name, "uuid": v.uuid, "power": v.power_state, "host": v.host, "memory": v.memory_mb,
            "vcpus": v.num_vcpus, "nics": [{"network": n.network, "ip": n.ip or "", "mac": n.mac} for n in v.nics]}
           for v in ctl.vms()]
    tasks = [{"operation": t.operation, "status": t.status, "user": t.user, "client": t.client, "error": t.error,
              "when": time.strftime("%H:%M:%S", time.localtime(t.created)),
              "entities": ", ".join(e.name or e.uuid[:8] for e in t.entities)} for t in tasklog.listed(who.lab)[:15]]
    return {"lab": who.lab, "user": who.user, "role": who.role, "can_change": who.can_change,
            "hosts": [{"name": h.name, "ip": h.ip, "cvm_ip": h.cvm_ip, "vms": h.vms} for h in ctl.hosts()],
            "vms": vms, "networks": nets, "tasks": tasks}


def _leases(lab: str) -> list[dict]:
    """What the lab's DHCP servers have handed out (dnsmasq's lease files, root's)."""
    out = []
    for path in sorted(dhcp.directory(lab).glob("*.leases")):
        for line in (state.read_private(path) or b"").decode(errors="replace").splitlines():
            parts = line.split()
            if len(parts) >= 4:
                out.append({"expires": time.strftime("%H:%M:%S", time.localtime(int(parts[0]))) if parts[0].isdigit() else "",
                            "mac": parts[1], "ip": parts[2], "host": parts[3], "node": path.stem})
    return out


def _diagram(lab: str) -> bytes:
    """lab.diagram's drawing (graphviz), made again when the lab's state turned or 10 s passed."""
    import os

    from .. import commands

    try:
        version = os.readlink(state.lab_dir(lab) / state.EFFECTIVE)
    except OSError:
        raise ApiError(404, f"lab {lab} is not up") from None
    cached = _diagrams.get(lab)
    if cached and cached[0] == version and time.monotonic() - cached[1] < 10:
        return cached[2]
    source = commands.diagram(str(state.topology_file(lab)))
    run = subprocess.run(["dot", "-Tsvg"], input=source.encode(), capture_output=True, timeout=30)
    if run.returncode:
        raise ApiError(500, f"graphviz could not draw the lab ({run.stderr.decode()[-200:]})")
    _diagrams[lab] = (version, time.monotonic(), run.stdout)
    return run.stdout
