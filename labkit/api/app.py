"""Prism on the lab: the ASGI application (FastAPI) that `invoke lab.serve` runs.

One server for the workstation's labs: each lab is a cluster, its nodes hosts, its networks, VMs
and NICs the control plane's records; a caller sees only the lab its user belongs to. Reads come
from the lab's effective state without its lock (views.py); every change is a task carried out
through the control plane and the pipeline (jobs.py), as acli's are. Prism v4 is here (every
`v4.N` path version routed alike); v2.0 and v3 are legacy.py; the web page web.py. What the
official SDKs need of it: shared/reference/prism-v4-sdk.md.
"""

from __future__ import annotations

import asyncio
import urllib.parse

from fastapi import APIRouter, Body, Depends, FastAPI, Path, Request
from pydantic import BaseModel, ConfigDict, Field
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import names, tasklog
from ..control import ControlError, network_uuid, nic_uuid
from ..errors import LabkitError
from ..ipam import IpamError
from . import power, query, shapes
from .auth import Authenticator, Principal, Unauthorized
from .jobs import Jobs
from .views import View, Views

VERSION = r"^v4\.\d+(\.[ab]\d+)?$"


class AppMessage(BaseModel):
    object_type: str = Field(alias="$objectType")
    message: str
    severity: str
    code: str
    locale: str


class ErrorData(BaseModel):
    object_type: str = Field(alias="$objectType")
    error: list[AppMessage]


class ErrorResponse(BaseModel):
    """Prism's error body (an ErrorResponse of AppMessages), on every answer that is not a success."""

    data: ErrorData


class TaskReferenceData(BaseModel):
    object_type: str = Field(alias="$objectType")
    ext_id: str = Field(alias="extId", pattern=r"^ZXJnb24=:[0-9a-f-]{36}$")


class TaskReference(BaseModel):
    """A change's answer (202): the task that carries it out."""

    data: TaskReferenceData


class Envelope(BaseModel):
    """A v4 answer: `data` (an entity, or a list of them, each with its $objectType), `metadata`."""

    model_config = ConfigDict(extra="allow")
    object_type: str = Field(alias="$objectType")
    metadata: dict
    data: dict | list | None = None


ERRORS = {code: {"model": ErrorResponse, "description": text} for code, text in (
    (400, "the request is not understood, or the lab refuses the change"), (401, "no valid credentials"),
    (403, "a viewer asked for a change"), (404, "no such object in the caller's lab, or no such API"),
    (409, "the change conflicts with what is there"), (412, "If-Match does not match the object's ETag"),
    (428, "this change needs If-Match"), (500, "a labkit bug"))}
HIGHEST = "v4.4"
NAMESPACES = ("networking", "vmm", "clustermgmt", "prism")


class ApiError(Exception):
    """An answer other than success, in Prism's ErrorResponse shape."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code or f"LABKIT-{status}", headers


def _namespace(path: str) -> str:
    parts = path.split("/")
    return parts[2] if len(parts) > 2 and parts[1] == "api" and parts[2] in NAMESPACES else "prism"


def error_response(request: Request, status: int, message: str, code: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(shapes.error(_namespace(request.url.path), message, code), status_code=status, headers=headers)


class Context:
    """What every handler needs: the views of the labs, who may ask, the jobs that change them."""

    def __init__(self):
        self.views, self.auth, self.jobs = Views(), Authenticator(), Jobs()


def create_app(context: Context | None = None) -> FastAPI:
    context = context or Context()
    app = FastAPI(title="labkit Prism", version="1", docs_url="/api/docs", openapi_url="/api/openapi.json",
                  redoc_url=None, description="Prism v4 (networking, vmm, clustermgmt, prism), v3 and v2.0 on a "
                  "labkit lab; basic auth with a lab's user (NAME or NAME@LAB) or X-ntnx-api-key.")
    app.state.context = context

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return error_response(request, exc.status, exc.message, exc.code, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        status = 404 if first.get("loc", ("",))[0] == "path" else 400
        return error_response(request, status, f"{where}: {first.get('msg', 'invalid request')}", f"LABKIT-{status}")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        message = {404: f"{request.url.path} is not an API of this server; see /api/docs",
                   405: f"{request.method} is not allowed on {request.url.path}"}.get(exc.status_code, str(exc.detail))
        return error_response(request, exc.status_code, message, f"LABKIT-{exc.status_code}")

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception):  # never a traceback to the client
        import logging

        logging.getLogger("labkit.api").exception("internal error on %s", request.url.path)
        return error_response(request, 500, f"internal error ({type(exc).__name__}); this is a labkit bug", "LABKIT-500")

    for namespace in NAMESPACES:
        app.add_api_route(f"/api/{namespace}/unversioned/info", _info, methods=["OPTIONS", "GET"], include_in_schema=False)
    app.add_middleware(CachedReads, context=context)
    app.include_router(v4_router())
    from . import legacy, web

    app.include_router(legacy.router())
    app.include_router(web.router())
    return app


class CachedReads:
    """The API's hot path, before FastAPI: a GET of a list asked for before, by a caller verified
    within the minute, for the lab's state as it still stands, is answered with the very bytes the
    full path made then (listing() keeps them). Everything else goes the full way."""

    def __init__(self, app, context: Context):
        self.app, self.context = app, context

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "GET":
            body = self._cached(scope)
            if body is not None:
                await send({"type": "http.response.start", "status": 200, "headers": [
                    (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)

    def _cached(self, scope) -> bytes | None:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]
                   if k in (b"authorization", b"x-ntnx-api-key", b"cookie")}
        if "x-ntnx-api-key" in headers or "cookie" in headers:
            return None
        who = self.context.auth.known(headers)
        if who is None:
            return None
        view = self.context.views.current(who.lab)
        return view.cache.get((scope["path"], scope["query_string"].decode("latin-1"))) if view else None


async def _info():
    """Version negotiation (SDKs 4.2 and later): the highest v4 version served."""
    return {"data": HIGHEST}


# --------------------------------------------------------------------------- dependencies


async def principal(request: Request) -> Principal:
    """The caller (401 with Prism's error and a basic-auth challenge when there is none). The web
    page's session cookie counts for a change only with the X-Labkit-UI header (which a form
    another site makes the browser send cannot carry)."""
    context: Context = request.app.state.context
    client = request.client.host if request.client else "-"
    headers = request.headers
    if (known := context.auth.known(headers)) is not None:  # verified within the minute: no thread, no scrypt
        return known
    cookie = request.cookies.get("labkit_session")
    try:
        who = await asyncio.to_thread(context.auth.principal, headers, client, cookie)
    except Unauthorized as exc:
        if exc.delay:
            await asyncio.sleep(exc.delay)
        raise ApiError(401, str(exc), "LABKIT-401", {"WWW-Authenticate": 'Basic realm="labkit"'}) from None
    by_cookie = not headers.get("authorization") and not headers.get("x-ntnx-api-key")
    if by_cookie and request.method not in ("GET", "HEAD", "OPTIONS") and not headers.get("x-labkit-ui"):
        raise ApiError(403, "a change made with the web page's session needs the X-Labkit-UI header")
    return who


def view_of(request: Request, who: Principal) -> View:
    try:
        return request.app.state.context.views.of(who.lab)
    except LabkitError as exc:
        raise ApiError(404, str(exc)) from None


def changer(who: Principal) -> Principal:
    if not who.can_change:
        raise ApiError(403, f"user {who.user} is a viewer of lab {who.lab}: it may read, not change")
    return who


def check_etag(request: Request, current: str, required: bool) -> None:
    """If-Match: required (428 when missing) where Prism requires it; a stale one is 412."""
    given = request.headers.get("if-match")
    if given is None:
        if required:
            raise ApiError(428, "this change needs If-Match: the ETag of the object as last read (GET it first)")
        return
    if given.strip().removeprefix("W/").strip('"') != current:
        raise ApiError(412, "the object changed since it was read (If-Match does not match its ETag); GET it again")


def refused(exc: Exception) -> ApiError:
    """A change the control plane refuses, as the 4xx a person understands."""
    message = str(exc)
    if isinstance(exc, ControlError) and any(w in message for w in ("already exists", "already carries", "in use",
                                                                      "already used")):
        return ApiError(409, message)
    if isinstance(exc, ControlError) and ("does not exist" in message or "no VM matches" in message):
        return ApiError(404, message)
    return ApiError(400, message)


def try_change(view: View, make):
    """`make(control)` against the lab as it stands: what the control plane refuses is refused now."""
    try:
        return make(view.ctl)
    except (ControlError, IpamError, shapes.BadRequest, LabkitError) as exc:
        raise refused(exc) from None


def queued(request: Request, who: Principal, make, operation: str, entities: tuple = (), before=None) -> JSONResponse:
    context: Context = request.app.state.context
    task = context.jobs.change(who, make, operation, entities, before)
    return JSONResponse(shapes.task_reference(task), status_code=202)


def envelope(kind: str, data, tag: str | None = None, total: int | None = None) -> JSONResponse:
    body: dict = {"$objectType": kind, "$reserved": {}, "metadata": {"flags": [], "links": []}}
    if data is not None:
        body["data"] = data
    if total is not None:
        body["metadata"]["totalAvailableResults"] = total
    return JSONResponse(body, headers={"ETag": tag} if tag else None)


def listing(request: Request, kind: str, entities: list[dict], view: View | None = None) -> Response:
    """A page of a list; with `view`, the answer is kept as bytes for this state of the lab and this
    query (a list is asked for again and again: by pollers, by the web page)."""
    key = (request.url.path, request.url.query)
    if view is not None and key in view.cache:
        return Response(view.cache[key], media_type="application/json")
    try:
        page, total = query.select(entities, dict(request.query_params))
    except shapes.BadRequest as exc:
        raise ApiError(400, str(exc)) from None
    response = envelope(kind, page or None, total=total)  # an empty list leaves `data` out, as Prism Central does
    if view is not None:
        view.cache[key] = response.body
    return response


def one(kind: str, entity: dict) -> JSONResponse:
    return envelope(kind, entity, entity["$reserved"].get("ETag"))


def _find(entities: list[dict], ext_id: str, what: str) -> dict:
    found = next((e for e in entities if e["extId"] == ext_id), None)
    if found is None:
        raise ApiError(404, f"{what} {ext_id!r:.60} does not exist in this cluster")
    return found


# --------------------------------------------------------------------------- v4


def v4_router() -> APIRouter:
    r = APIRouter(responses=ERRORS)
    V = Path(pattern=VERSION, description="any v4 version: v4.0 to v4.4")
    Who = Depends(principal)

    # networking ----------------------------------------------------------

    @r.get("/api/networking/{version}/config/subnets", tags=["networking"], response_model=Envelope)
    async def list_subnets(request: Request, version: str = V, who: Principal = Who):
        view = view_of(request, who)
        return listing(request, "networking.v4.config.ListSubnetsApiResponse", view.subnets, view)

    @r.get("/api/networking/{version}/config/subnets/{ext_id}", tags=["networking"], response_model=Envelope)
    def get_subnet(request: Request, ext_id: str, version: str = V, who: Principal = Who):
        return one("networking.v4.config.GetSubnetApiResponse", _find(view_of(request, who).subnets, ext_id, "subnet"))

    @r.post("/api/networking/{version}/config/subnets", tags=["networking"], status_code=202, response_model=TaskReference)
    def create_subnet(request: Request, version: str = V, body: dict = Body(...), who: Principal = Who):
        changer(who)
        view = view_of(request, who)
        name, vlan, bridge, managed = try_change(view, lambda ctl: shapes.subnet_spec(body, ctl))
        make = lambda ctl: ctl.subnet_create(name, vlan, bridge, managed)  # noqa: E731
        try_change(view, make)
        entity = tasklog.Entity(network_uuid(who.lab, name), shapes.REL["net"], name)
        return queued(request, who, make, "NetworkCreate", (entity,))

    @r.put("/api/networking/{version}/config/subnets/{ext_id}", tags=["networking"], status_code=202, response_model=TaskReference)
    def update_subnet(request: Request, ext_id: str, version: str = V, body: dict = Body(...), who: Principal = Who):
        changer(who)
        view = view_of(request, who)
        current = _find(view.subnets, ext_id, "subnet")
        check_etag(request, current["$reserved"]["ETag"], required=True)
        name, vlan, bridge, managed = try_change(view, lambda ctl: shapes.subnet_spec(body, ctl))
        if (name, vlan) != (current["name"], current["networkId"]):
            raise ApiError(400, "renaming a subnet or moving it to another VLAN is not modelled in this lab; "
                                "create another subnet and move the NICs")
        make = lambda ctl: ctl.subnet_update(name, managed)  # noqa: E731
        try_change(view, make)
        return queued(request, who, make, "NetworkUpdate", (tasklog.Entity(ext_id, shapes.REL["net"], name),))

    @r.delete("/api/networking/{version}/config/subnets/{ext_id}", tags=["networking"], status_code=202, response_model=TaskReference)
    def delete_subnet(request: Request, ext_id: str, version: str = V, who: Principal = Who):
        changer(who)
        view = view_of(request, who)
        current = _find(view.subnets, ext_id, "subnet")
        check_etag(request, current["$reserved"]["ETag"], required=False)  # Terraform deletes without it
        make = lambda ctl: ctl.net_delete(current["name"])  # noqa: E731
        try_change(view, make)
        return queued(request, who, make, "NetworkDelete", (tasklog.Entity(ext_id, shapes.REL["net"], current["name"]),))

    # vmm ---------------------------------------------------------------------

    @r.get("/api/vmm/{version}/ahv/config/vms", tags=["vmm"], response_model=Envelope)
    async def list_vms(request: Request, version: str = V, who: Principal = Who):
        view = view_of(request, who)
        return listing(request, "vmm.v4.ahv.config.ListVmsApiResponse", view.vms, view)

    @r.get("/api/vmm/{version}/ahv/config/vms/{ext_id}", tags=["vmm"], response_model=Envelope)
    def get_vm(request: Request, ext_id: str, version: str = V, who: Principal = Who):
        return one("vmm.v4.ahv.config.GetVmApiResponse", _find(view_of(request, who).vms, ext_id, "VM"))

    @r.post("/api/vmm/{version}/ahv/config/vms", tags=["vmm"], status_code=202, response_model=TaskReference)
    def create_vm(request: Request, version: str = V, body: dict = Body(...), who: Principal = Who):
        changer(who)
        view = view_of(request, who)
        name, memory, sockets, cores, nics = try_change(view, lambda ctl: shapes.vm_spec(body, ctl))
        make = lambda ctl: ctl.vm_create(name, memory, sockets, nics, cores)  # noqa: E731
        try_change(view, make)
        return queued(request, who, make, "VmCreate", (tasklog.Entity(names.uuid_for(who.lab, name), shapes.REL["vm"], name),))

    @r.put("/api/vmm/{version}/ahv/config/vms/{ext_id}", tags=["vmm"], status_code=202, response_model=TaskReference)
    def update_vm(request: Request, ext_id: str, version: str = V, body: dict = Body(...), who: Principal = Who):
        changer(who)
        view = view_of(request, who)
        current = _find(view.vms, ext_id, "VM")
        check_etag(request, current["$reserved"]["ETag"], required=True)
        name, memory, sockets, cores, _ = try_change(view, lambda ctl: shapes.vm_spec({**body, "nics": []}, ctl))
        make = lambda ctl: ctl.vm_update(ext_id, memory, sockets, cores, name)  # noqa: E731 (a rename keeps the UUID)
        try_change(view, make)
        return queued(request, who, make, "VmUpdate", (tasklog.Entity(ext_id, shapes.REL["vm"], name),))

    @r.delete("/api/vmm/{version}/ahv/config/vms/{ext_id}", tags=["vmm"], status_code=202, response_model=TaskReference)
    def delete_vm(request: Request, ext_id: str, version: str = V, who: Principal = Who):
        changer(who)
        view = view_of(request, who)
        current = _find(view.vms, ext_id, "VM")
        check_etag(request, current["$reserved"]["ETag"], required=True)
        make = lambda ctl: ctl.vm_delete(ext_id)  # noqa: E731
        try_change(view, make)
        return queued(request, who, make, "VmDelete", (tasklog.Entity(ext_id, shapes.REL["vm"], current["name"]),))

    @r.post("/api/vmm/{version}/ahv/config/vms/{ext_id}/$actions/{action}", tags=["vmm"], status_code=202, response_model=TaskReference)
    def vm_action(request: Request, ext_id: str, action: str, version: str = V, who: Principal = Who):
        changer(who)
        view = view_of(request, who)
        current = _find(view.vms, ext_id, "VM")
        if action not in power.ACTIONS:
            raise ApiError(404, f"{action!r:.40} is not a VM action; use {', '.join(power.ACTIONS)}")
        check_etag(request, current["$reserved"]["ETag"], required=True)
        entity = (tasklog.Entity(ext_id, shapes.REL["vm"], current["name"]),)
        operation, on, act = power.ACTIONS[action]
        if on is not None:  # a change of the VM's power state: the lab's topology records it
            make = lambda ctl: ctl.vm_power(ext_id, on)  # noqa: E731
            if on and current["powerState"] == "ON" or not on and current["powerState"] == "OFF":
                raise ApiError(409, f"VM {current['name']} is already powered {'on' if on else 'off'}")
            try_change(view, make)
            before = (lambda lab: act(lab, current["name"])) if act else None
            return queued(request, who, make, operation, entity, before)
        if current["powerState"] != "ON":
            raise ApiError(409, f"VM {current['name']} is powered off; power it on first")
        task = request.app.state.context.jobs.action(who, lambda lab: act(lab, current["name"]), operation, entity)
        return JSONResponse(shapes.task_reference(task), status_code=202)

    @r.get("/api/vmm/{version}/ahv/config/vms/{vm_id}/nics", tags=["vmm"], response_model=Envelope)
    def list_nics(request: Request, vm_id: str, version: str = V, who: Principal = Who):
        vm = _find(view_of(request, who).vms, vm_id, "VM")
        return listing(request, "vmm.v4.ahv.config.ListNicsApiResponse", vm["nics"])

    @r.get("/api/vmm/{version}/ahv/config/vms/{vm_id}/nics/{ext_id}", tags=["vmm"], response_model=Envelope)
    def get_nic(request: Request, vm_id: str, ext_id: str, version: str = V, who: Principal = Who):
        vm = _find(view_of(request, who).vms, vm_id, "VM")
        return envelope("vmm.v4.ahv.config.GetNicApiResponse", _find(vm["nics"], ext_id, "NIC"), vm["$reserved"]["ETag"])

    @r.post("/api/vmm/{version}/ahv/config/vms/{vm_id}/nics", tags=["vmm"], status_code=202, response_model=TaskReference)
    def create_nic(request: Request, vm_id: str, version: str = V, body: dict = Body(...), who: Principal = Who):
        changer(who)
        view = view_of(request, who)
        vm = _find(view.vms, vm_id, "VM")
        check_etag(request, vm["$reserved"]["ETag"], required=False)
        spec = try_change(view, lambda ctl: shapes.nic_spec(body, ctl))
        make = lambda ctl: ctl.nic_create(vm_id, spec["network"], ip=spec.get("ip"), mac=spec.get("mac"),  # noqa: E731
                                          trunked_networks=spec.get("trunked_networks"))
        change = try_change(view, make)
        mac = next(key.split(":", 2)[2] for key in change.touched if key.startswith("nic:"))  # the MAC it will have
        entities = (tasklog.Entity(vm_id, shapes.REL["vm"], vm["name"]),
                    tasklog.Entity(nic_uuid(who.lab, mac), shapes.REL["nic"], mac))
        return queued(request, who, lambda ctl: ctl.nic_create(vm_id, spec["network"], ip=spec.get("ip"), mac=mac,
                                                               trunked_networks=spec.get("trunked_networks")),
                      "NicCreate", entities)

    @r.put("/api/vmm/{version}/ahv/config/vms/{vm_id}/nics/{ext_id}", tags=["vmm"], status_code=202, response_model=TaskReference)
    def update_nic(request: Request, vm_id: str, ext_id: str, version: str = V, body: dict = Body(...),
                   who: Principal = Who):
        changer(who)
        view = view_of(request, who)
        vm = _find(view.vms, vm_id, "VM")
        nic = _find(vm["nics"], ext_id, "NIC")
        check_etag(request, vm["$reserved"]["ETag"], required=False)
        spec = try_change(view, lambda ctl: shapes.nic_spec(body, ctl))
        mac = nic["backingInfo"]["macAddress"]
        make = lambda ctl: ctl.nic_update(vm_id, mac, network=spec["network"], ip=spec.get("ip"),  # noqa: E731
                                          trunked_networks=spec.get("trunked_networks"),
                                          access="trunked_networks" not in spec)
        try_change(view, make)
        return queued(request, who, make, "NicUpdate", (tasklog.Entity(ext_id, shapes.REL["nic"], mac),))

    @r.delete("/api/vmm/{version}/ahv/config/vms/{vm_id}/nics/{ext_id}", tags=["vmm"], status_code=202, response_model=TaskReference)
    def delete_nic(request: Request, vm_id: str, ext_id: str, version: str = V, who: Principal = Who):
        changer(who)
        view = view_of(request, who)
        vm = _find(view.vms, vm_id, "VM")
        nic = _find(vm["nics"], ext_id, "NIC")
        check_etag(request, vm["$reserved"]["ETag"], required=False)
        mac = nic["backingInfo"]["macAddress"]
        make = lambda ctl: ctl.nic_delete(vm_id, mac)  # noqa: E731
        try_change(view, make)
        return queued(request, who, make, "NicDelete", (tasklog.Entity(ext_id, shapes.REL["nic"], mac),))

    # clustermgmt ---------------------------------------------------------------

    @r.get("/api/clustermgmt/{version}/config/clusters", tags=["clustermgmt"], response_model=Envelope)
    def list_clusters(request: Request, version: str = V, who: Principal = Who):
        return listing(request, "clustermgmt.v4.config.ListClustersApiResponse", [view_of(request, who).cluster])

    @r.get("/api/clustermgmt/{version}/config/clusters/{ext_id}", tags=["clustermgmt"], response_model=Envelope)
    def get_cluster(request: Request, ext_id: str, version: str = V, who: Principal = Who):
        return one("clustermgmt.v4.config.GetClusterApiResponse", _find([view_of(request, who).cluster], ext_id, "cluster"))

    @r.get("/api/clustermgmt/{version}/config/hosts", tags=["clustermgmt"], response_model=Envelope)
    def list_hosts(request: Request, version: str = V, who: Principal = Who):
        return listing(request, "clustermgmt.v4.config.ListHostsApiResponse", view_of(request, who).hosts)

    @r.get("/api/clustermgmt/{version}/config/clusters/{cluster_id}/hosts", tags=["clustermgmt"], response_model=Envelope)
    def list_cluster_hosts(request: Request, cluster_id: str, version: str = V, who: Principal = Who):
        view = view_of(request, who)
        _find([view.cluster], cluster_id, "cluster")
        return listing(request, "clustermgmt.v4.config.ListHostsApiResponse", view.hosts)

    @r.get("/api/clustermgmt/{version}/config/clusters/{cluster_id}/hosts/{ext_id}", tags=["clustermgmt"], response_model=Envelope)
    def get_host(request: Request, cluster_id: str, ext_id: str, version: str = V, who: Principal = Who):
        view = view_of(request, who)
        _find([view.cluster], cluster_id, "cluster")
        return one("clustermgmt.v4.config.GetHostApiResponse", _find(view.hosts, ext_id, "host"))

    # prism ---------------------------------------------------------------------

    @r.get("/api/prism/{version}/config/tasks", tags=["prism"], response_model=Envelope)
    def list_tasks(request: Request, version: str = V, who: Principal = Who):
        return listing(request, "prism.v4.config.ListTasksApiResponse",
                       [shapes.task(who.lab, t) for t in tasklog.listed(who.lab)])

    @r.get("/api/prism/{version}/config/tasks/{ext_id}", tags=["prism"], response_model=Envelope)
    def get_task(request: Request, ext_id: str, version: str = V, who: Principal = Who):
        task_id = urllib.parse.unquote(ext_id).removeprefix(shapes.TASK_PREFIX)
        found = tasklog.get(who.lab, task_id)
        if found is None:
            raise ApiError(404, f"task {ext_id!r:.80} does not exist in this cluster")
        return one("prism.v4.config.GetTaskApiResponse", shapes.task(who.lab, found))

    return r

