#!/usr/bin/env python3
"""gemmactl against a scripted fake gemmad (docs/protocol.md): framing, fds over SCM_RIGHTS,
option mapping, output, exit codes, Ctrl-C, chat. The real service is exercised by
tests/integration; this covers what a real service will not do on demand (bad lines, lost
connections, every error code).

usage: test-gemmactl.py PATH/TO/gemmactl
Waits are on events (a line logged, a text seen), never on sleeps; timeouts only catch hangs.
"""
import array
import json
import os
import pty
import select
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import traceback

GEMMACTL = os.path.abspath(sys.argv[1])
HANG = 20  # seconds before a wait counts as a hang

SUMMARY = {"prompt_tokens": 12, "cached_tokens": 0, "generated_tokens": 3, "thinking_tokens": 0,
           "context_used": 15, "context_size": 4096, "seed": 1234, "queue_seconds": 0.5,
           "load_seconds": 0, "encode_seconds": 0, "prefill_seconds": 0.25, "decode_seconds": 0.5,
           "total_seconds": 1.25}


class FakeGemmad:
    """Serves one socket in threads. behaviour keys: see handle()/stream()."""

    def __init__(self, tmp, **behaviour):
        self.b = behaviour
        self.path = os.path.join(tmp, "gemmad-%d.sock" % id(self))
        self.log = []                 # requests received, each with "_fds"
        self.cond = threading.Condition()
        self.handles = {}             # "r-N" -> (conn, id)
        self.next_handle = 40
        self.sessions = {}
        self.opened = 0
        self.release = threading.Event()  # lets a held stream go on
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(self.path)
        self.srv.listen(8)
        threading.Thread(target=self.accept_loop, daemon=True).start()

    def accept_loop(self):
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            threading.Thread(target=Conn(self, c).serve, daemon=True).start()

    def close(self):
        self.srv.close()

    def record(self, entry):
        with self.cond:
            self.log.append(entry)
            self.cond.notify_all()

    def wait_for(self, pred, what):
        with self.cond:
            if not self.cond.wait_for(lambda: any(pred(e) for e in self.log), HANG):
                raise AssertionError("server never got " + what)
            return next(e for e in self.log if pred(e))

    def requests(self, type_):
        with self.cond:
            return [e for e in self.log if e.get("type") == type_]


class Conn:
    def __init__(self, server, sock):
        self.s = server
        self.b = server.b
        self.sock = sock
        self.lock = threading.Lock()
        self.cancelled = set()

    def send(self, obj=None, raw=None):
        data = (raw if raw is not None else json.dumps(obj)) + "\n"
        with self.lock:
            try:
                self.sock.sendall(data.encode())
                return True
            except OSError:
                return False

    def done(self, rid, **fields):
        self.send(dict({"id": rid, "event": "done"}, **dict(SUMMARY, **fields)))

    def stream(self, rid, req):
        s = self.s
        with s.cond:
            handle = "r-%d" % s.next_handle
            s.next_handle += 1
            s.handles[handle] = (self, rid)
        self.send({"id": rid, "event": "accepted", "request": handle})
        self.send({"id": rid, "event": "progress", "state": "queued", "queue_position": 1})
        if self.b.get("hold_queued"):
            s.release.wait(HANG)
        self.send({"id": rid, "event": "progress", "state": "prefill", "prompt_done": 3,
                   "prompt_total": 12})
        self.send({"id": rid, "event": "progress", "state": "generating"})
        self.send({"id": rid, "event": "from_the_future", "data": [1, {"x": None}]})
        seq = 0
        if self.b.get("thinking"):
            self.send({"id": rid, "event": "thinking", "seq": seq, "text": "Let me think."})
            seq += 1
        if "prompt" in req:
            text = req["prompt"]
        else:
            text = " ".join(p.get("text", "[%s]" % p["type"]) for p in req.get("content", []))
        if self.b.get("endless"):
            # pieces until cancelled (or never, with ignore_cancel) or the client leaves
            i = 0
            end = time.time() + HANG
            while time.time() < end:
                if rid in self.cancelled and not self.b.get("ignore_cancel"):
                    self.done(rid, stop_reason="cancelled", cancel_reason="client", pieces=seq)
                    return
                if not self.send({"id": rid, "event": "piece", "seq": seq, "text": "tok%d " % i}):
                    return  # the client left
                seq += 1
                i += 1
                time.sleep(0.01)
            return
        for piece in ["You said: ", text, "."]:
            self.send({"id": rid, "event": "piece", "seq": seq, "text": piece, "later_key": True})
            seq += 1
        if self.b.get("drop"):
            self.sock.shutdown(socket.SHUT_RDWR)
            return
        if self.b.get("not_json"):
            self.send(raw="this is not json {")
            return
        if "fail" in text:
            self.done(rid, stop_reason="error", error_code="internal",
                      error_message="the engine failed", pieces=seq)
        else:
            self.done(rid, stop_reason="max_tokens" if "limit" in text else "eog", pieces=seq)
        with s.cond:
            s.handles.pop(handle, None)

    def handle(self, req, fds):
        entry = dict(req)
        entry["_fds"] = []
        for fd in fds:
            st = os.fstat(fd)
            regular = stat.S_ISREG(st.st_mode)
            entry["_fds"].append({"regular": regular,
                                  "data": os.pread(fd, 64, 0).decode("latin-1") if regular else None})
            os.close(fd)
        self.s.record(entry)
        rid, t = req.get("id"), req.get("type")
        if t == "hello":
            if self.b.get("no_hello"):
                return
            if self.b.get("bad_version"):
                self.send({"id": rid, "error": {"code": "invalid_argument", "supported": [2],
                                                 "message": "protocol version 1 not supported"}})
                return
            self.send({"id": rid, "result": {
                "version": 1, "server": "gemmad", "server_version": "0.1.0", "api_version": 1,
                "uid": os.getuid(), "admin": False,
                "limits": {"max_line_bytes": 33554432, "max_fds_per_line": 4,
                           "max_media_bytes": 1000, "max_queue": 64}}})
            return
        if self.b.get("null_error"):
            self.send({"id": None, "error": {"code": "limit_exceeded",
                                             "message": "line 2: longer than 33554432 bytes"}})
            return
        if t in ("generate", "session.send") and self.b.get("reject"):
            self.send({"id": rid, "error": {"code": self.b["reject"], "field": "options.top_p",
                                             "message": "rejected: " + self.b["reject"]}})
            return
        if t == "info":
            self.send({"id": rid, "result": {
                "version": "0.1.0", "api_version": 1, "model_name": "gemma4-tiny",
                "architecture": "gemma4", "quantization": "Q8_0", "context_size": 4096,
                "modalities": ["text"], "media_types": [], "load_state": "loaded",
                "load_error": "", "queue_length": 0, "active_requests": 0,
                "added_later": {"a": 1}, "default_options": {"temperature": 1.0, "top_k": 64}}})
        elif t in ("generate", "session.send"):
            if t == "session.send":
                hist = self.s.sessions.get(req.get("session"))
                if hist is None:
                    self.send({"id": rid, "error": {"code": "invalid_argument",
                                                     "message": "no such session"}})
                    return
                hist.append({"role": "user", "content": req["content"]})
                hist.append({"role": "model", "content": [{"type": "text", "text": "an answer"}]})
            threading.Thread(target=self.stream, args=(rid, req), daemon=True).start()
        elif t == "cancel":
            found = False
            if "target" in req:
                self.cancelled.add(req["target"])
                found = True
            else:
                with self.s.cond:
                    hit = self.s.handles.get(req.get("request"))
                if hit:
                    hit[0].cancelled.add(hit[1])
                    found = True
            self.send({"id": rid, "result": {"found": found}})
        elif t == "list":
            with self.s.cond:
                handles = list(self.s.handles)
            self.send({"id": rid, "result": {"requests": [
                {"request": h, "state": "generating", "session": None} for h in handles]}})
        elif t == "session.open":
            self.s.opened += 1
            name = "s%d" % self.s.opened
            self.s.sessions[name] = []
            self.send({"id": rid, "result": {"session": name, "context_size": 4096,
                                             "context_used": 9}})
            if self.b.get("close_session") and name == "s1":
                self.send({"id": None, "event": "session_closed", "session": name,
                           "reason": "idle"})
                del self.s.sessions[name]
        elif t == "session.history":
            self.send({"id": rid, "result": {"messages": self.s.sessions.get(req["session"], [])}})
        elif t == "session.truncate":
            self.s.sessions[req["session"]] = self.s.sessions[req["session"]][:req["keep"]]
            self.send({"id": rid, "result": {"context_used": 9, "message_count": req["keep"]}})
        else:
            self.send({"id": rid, "error": {"code": "invalid_argument",
                                             "message": "unknown type %s" % t}})

    def serve(self):
        if self.b.get("deny"):
            self.send({"id": None, "error": {"code": "permission_denied",
                                             "message": "uid 1000 may not use gemmad"}})
            self.sock.close()
            return
        buf = b""
        while True:
            try:
                data, anc, _, _ = self.sock.recvmsg(65536, socket.CMSG_SPACE(16 * 4))
            except OSError:
                return
            if not data:
                return
            fds = array.array("i")
            for level, typ, cdata in anc:
                if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
                    fds.frombytes(cdata[:len(cdata) - len(cdata) % fds.itemsize])
            buf += data
            lines = buf.split(b"\n")
            buf = lines.pop()
            # protocol §5: the fds belong to the line holding the last byte of this read
            assert not (fds and buf), "fds arrived with a partial line"
            for i, line in enumerate(lines):
                if line.strip():
                    self.handle(json.loads(line), list(fds) if i == len(lines) - 1 else [])


# ---- running gemmactl --------------------------------------------------------------------

def env_for(server):
    env = dict(os.environ)
    env.pop("XDG_RUNTIME_DIR", None)
    env["GEMMAD_SOCKET"] = server.path if server else "/nonexistent/gemmad.sock"
    env["LC_ALL"] = "C.UTF-8"
    return env


def run(server, *args, stdin=b"", check_rc=None):
    p = subprocess.run([GEMMACTL, *args], input=stdin, capture_output=True, env=env_for(server),
                       timeout=HANG)
    out, err = p.stdout.decode(), p.stderr.decode()
    assert_clean(err)
    if check_rc is not None:
        assert p.returncode == check_rc, "rc %d != %d\nstdout: %s\nstderr: %s" % (
            p.returncode, check_rc, out, err)
    return p.returncode, out, err


def assert_clean(err):
    for bad in ("AddressSanitizer", "LeakSanitizer", "runtime error:", "CRITICAL", "WARNING **"):
        assert bad not in err, "stderr reports a problem:\n" + err


class Pty:
    """gemmactl on a pseudo-terminal (stdin, stdout and stderr)."""

    def __init__(self, server, *args):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.execve(GEMMACTL, [GEMMACTL, *args], env_for(server))
        self.out = b""

    def read_until(self, text):
        end = time.time() + HANG
        while text.encode() not in self.out:
            left = end - time.time()
            assert left > 0, "never saw %r in %r" % (text, self.out)
            r, _, _ = select.select([self.fd], [], [], left)
            try:
                data = os.read(self.fd, 65536)
            except OSError:
                data = b""
            if not data:
                raise AssertionError("exited before %r: %r" % (text, self.out))
            self.out += data

    def write(self, data):
        os.write(self.fd, data)

    def wait(self):
        end = time.time() + HANG
        while time.time() < end:
            r, _, _ = select.select([self.fd], [], [], 0.2)
            if r:
                try:
                    data = os.read(self.fd, 65536)
                except OSError:
                    data = b""
                self.out += data
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                assert_clean(self.out.decode(errors="replace"))
                return os.waitstatus_to_exitcode(status)
        os.kill(self.pid, signal.SIGKILL)
        raise AssertionError("did not exit: %r" % self.out)


# ---- tests --------------------------------------------------------------------------------

def test_info(tmp):
    s = FakeGemmad(tmp)
    _, out, _ = run(s, "info", check_rc=0)
    assert "gemma4-tiny" in out and "4096 tokens" in out and "added_later" in out, out
    assert "max_fds_per_line" in out, out
    _, out, _ = run(s, "info", "--json", check_rc=0)
    assert json.loads(out)["model_name"] == "gemma4-tiny"
    hello = s.requests("hello")[0]
    assert hello["version"] == 1 and hello["client"].startswith("gemmactl/"), hello


def test_generate_text(tmp):
    s = FakeGemmad(tmp)
    _, out, err = run(s, "generate", "hello", "world", check_rc=0)
    assert out == "You said: hello world.\n", repr(out)
    req = s.requests("generate")[0]
    assert req["content"] == [{"type": "text", "text": "hello world"}], req
    assert "options" not in req, req
    # stdin, with every option
    _, out, _ = run(s, "generate", "--system", "be brief", "--thinking", "--temperature", "0",
                    "--top-k", "5", "--top-p", "0.5", "--min-p", "0.1", "--repeat-penalty", "1.1",
                    "--repeat-last-n", "-1", "--presence-penalty", "0.5",
                    "--frequency-penalty", "-0.5", "--seed", "9007199254740991", "-n", "3",
                    "--stop", "\\n\\n", "--stop", "END", "--image-tokens", "280",
                    stdin=b"from stdin\n", check_rc=0)
    req = s.requests("generate")[1]
    assert req["content"] == [{"type": "text", "text": "from stdin"}], req
    assert req["options"] == {"system": "be brief", "thinking": True, "temperature": 0,
                              "top_k": 5, "top_p": 0.5, "min_p": 0.1, "repeat_penalty": 1.1,
                              "repeat_last_n": -1, "presence_penalty": 0.5,
                              "frequency_penalty": -0.5, "seed": 9007199254740991,
                              "max_tokens": 3, "stop": ["\n\n", "END"],
                              "image_tokens": 280}, req["options"]
    run(s, "generate", "--raw", "--no-thinking", "-", stdin=b"x", check_rc=0)
    assert s.requests("generate")[2]["options"] == {"raw": True, "thinking": False}


def test_generate_media(tmp):
    s = FakeGemmad(tmp)
    img = os.path.join(tmp, "a.png")
    with open(img, "wb") as f:
        f.write(b"\x89PNG fake image")
    # a pipe is not a regular file: gemmactl passes a memfd copy instead
    r, w = os.pipe()
    os.write(w, b"RIFF....WAVE")
    os.close(w)
    p = subprocess.run([GEMMACTL, "generate", "--image", img, "--audio", "/dev/fd/%d" % r,
                        "--image", img, "describe"], pass_fds=(r,), capture_output=True,
                       env=env_for(s), timeout=HANG)
    os.close(r)
    assert p.returncode == 0, p.stderr
    req = s.requests("generate")[0]
    assert req["content"] == [{"type": "image", "fd": 0}, {"type": "audio", "fd": 1},
                              {"type": "image", "fd": 2},
                              {"type": "text", "text": "describe"}], req["content"]
    assert [f["data"] for f in req["_fds"]] == ["\x89PNG fake image", "RIFF....WAVE",
                                                "\x89PNG fake image"], req["_fds"]
    assert all(f["regular"] for f in req["_fds"])
    # media only: no text part
    run(s, "generate", "--image", img, "-", stdin=b"", check_rc=0)
    assert s.requests("generate")[1]["content"] == [{"type": "image", "fd": 0}]
    # more files than max_fds_per_line (4 in this hello)
    _, _, err = run(s, "generate", *["--image=" + img] * 5, "x", check_rc=4)
    assert "at most 4" in err, err
    _, _, err = run(s, "generate", "--image", os.path.join(tmp, "missing.png"), "x", check_rc=2)
    assert "missing.png" in err, err
    _, _, err = run(s, "generate", "--image", tmp, "x", check_rc=2)
    assert "directory" in err, err
    assert len(s.requests("generate")) == 2


def test_json_output(tmp):
    s = FakeGemmad(tmp, thinking=True)
    _, out, err = run(s, "generate", "--json", "hi", check_rc=0)
    result = json.loads(out)
    assert result["text"] == "You said: hi." and result["thinking"] == "Let me think."
    assert result["stop_reason"] == "eog" and result["seed"] == 1234
    assert "id" not in result and "event" not in result
    assert err == "", err
    rc, out, err = run(s, "generate", "--json", "please fail", check_rc=1)
    result = json.loads(out)
    assert result["stop_reason"] == "error" and result["error_message"] == "the engine failed"
    _, out, err = run(s, "generate", "please fail", check_rc=1)
    assert out == "You said: please fail.\n" and "gemmactl: the engine failed" in err, (out, err)
    _, out, err = run(s, "generate", "hit the limit", check_rc=0)
    assert "token limit" in err, err
    _, out, err = run(s, "-q", "generate", "hit the limit", check_rc=0)
    assert err == "Let me think.\n", repr(err)
    _, out, err = run(s, "generate", "--hide-thinking", "-q", "hi", check_rc=0)
    assert err == "" and out == "You said: hi.\n", (out, err)


def test_errors(tmp):
    codes = {"invalid_argument": 4, "limit_exceeded": 4, "context_exceeded": 4,
             "unsupported_media": 4, "busy": 5, "cancelled": 6, "model_not_loaded": 7,
             "permission_denied": 8, "internal": 1, "some_future_code": 1}
    for code, rc in codes.items():
        s = FakeGemmad(tmp, reject=code)
        _, out, err = run(s, "generate", "hi", check_rc=rc)
        assert err == "gemmactl: rejected: %s\n" % code and out == "", (out, err)
        _, out, _ = run(s, "generate", "--json", "hi", check_rc=rc)
        assert json.loads(out) == {"error": {"code": code, "message": "rejected: " + code,
                                             "field": "options.top_p"}}, out
    _, out, err = run(FakeGemmad(tmp, deny=True), "generate", "hi", check_rc=8)
    assert "may not use gemmad" in err, err
    run(FakeGemmad(tmp, null_error=True), "generate", "hi", check_rc=4)
    _, _, err = run(FakeGemmad(tmp, bad_version=True), "info", check_rc=1)
    assert "not supported" in err, err
    _, _, err = run(None, "info", check_rc=3)
    assert "is gemmad running?" in err, err
    _, out, err = run(None, "generate", "--json", "x", check_rc=3)
    assert json.loads(out)["error"]["code"] == "connect_failed"
    # the lines before a bad one are still used; then a clear message and 1
    _, out, err = run(FakeGemmad(tmp, not_json=True), "generate", "hi", check_rc=1)
    assert out == "You said: hi.\n" and "not JSON" in err, (out, err)
    _, out, err = run(FakeGemmad(tmp, drop=True), "generate", "hi", check_rc=3)
    assert "connection to gemmad lost" in err, err
    start = time.time()
    _, _, err = run(FakeGemmad(tmp, no_hello=True), "--timeout", "1", "info", check_rc=3)
    assert "did not answer" in err and time.time() - start < 10, err


def test_usage(tmp):
    s = FakeGemmad(tmp)
    run(s, check_rc=2)
    run(s, "frobnicate", check_rc=2)
    run(s, "generate", "--no-such-option", check_rc=2)
    run(s, "generate", "--top-k", "many", "x", check_rc=2)
    run(s, "generate", "--thinking", "--no-thinking", "x", check_rc=2)
    run(s, "generate", stdin=b"", check_rc=2)
    run(s, "generate", stdin=b"\xff\xfe", check_rc=2)
    run(s, "chat", "hello", check_rc=2)
    run(s, "cancel", check_rc=2)
    run(s, "--timeout", "-1", "info", check_rc=2)
    _, out, _ = run(s, "--version", check_rc=0)
    assert out.startswith("gemmactl "), out
    _, out, _ = run(s, "help", "generate", check_rc=0)
    assert "--max-tokens" in out, out
    assert s.requests("generate") == []


def wait_line(stream, text):
    data = b""
    while text.encode() not in data:
        chunk = stream.read1(4096)
        assert chunk, "stream ended before %r: %r" % (text, data)
        data += chunk
    return data


def test_sigint(tmp):
    s = FakeGemmad(tmp, endless=True)
    p = subprocess.Popen([GEMMACTL, "generate", "tell me"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env_for(s))
    wait_line(p.stdout, "tok1 ")
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=HANG)
    assert p.returncode == 6, (p.returncode, err)
    assert b"gemmactl: cancelled" in err, err
    gen = s.requests("generate")[0]
    assert s.requests("cancel")[0]["target"] == gen["id"]
    # a second Ctrl-C quits without waiting for "done"
    s = FakeGemmad(tmp, endless=True, ignore_cancel=True)
    p = subprocess.Popen([GEMMACTL, "generate", "--json", "tell me"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env_for(s))
    s.wait_for(lambda e: e.get("type") == "generate", "generate")
    p.send_signal(signal.SIGINT)
    s.wait_for(lambda e: e.get("type") == "cancel", "cancel")
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=HANG)
    assert p.returncode == 6, (p.returncode, err)
    assert_clean(err.decode())


def test_cancel_and_list(tmp):
    s = FakeGemmad(tmp, endless=True)
    p = subprocess.Popen([GEMMACTL, "generate", "x"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env_for(s))
    wait_line(p.stdout, "tok0")
    _, out, _ = run(s, "list", check_rc=0)
    assert "r-40" in out and "generating" in out, out
    _, out, _ = run(s, "list", "--json", check_rc=0)
    assert json.loads(out)["requests"][0]["request"] == "r-40"
    run(s, "cancel", "r-40", check_rc=0)
    assert s.requests("cancel")[0]["request"] == "r-40"
    p.communicate(timeout=HANG)
    assert p.returncode == 6
    _, out, err = run(s, "cancel", "--json", "r-99", check_rc=1)
    assert json.loads(out) == {"requests": [{"request": "r-99", "found": False}]}, out


def test_broken_stdout(tmp):
    s = FakeGemmad(tmp, endless=True)
    p = subprocess.Popen([GEMMACTL, "generate", "x"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env_for(s))
    wait_line(p.stdout, "tok0")
    p.stdout.close()  # like "| head -c 5"
    err = p.stderr.read()
    p.wait(timeout=HANG)
    assert p.returncode == 1, (p.returncode, err)  # not killed by SIGPIPE
    assert b"Broken pipe" in err, err


def test_chat_piped(tmp):
    s = FakeGemmad(tmp)
    img = os.path.join(tmp, "b.png")
    with open(img, "wb") as f:
        f.write(b"\x89PNG b")
    script = ("hello\n/history\n/reset\n/history\n//slash\n/image %s\nwith image\n"
              "/bogus\n\nlast line" % img).encode()
    _, out, err = run(s, "chat", "--system", "terse", "--context-size", "512",
                      "--temperature", "0.5", "--image", img, stdin=script, check_rc=0)
    assert out == ("You said: [image] hello.\nuser: [image] hello\nmodel: an answer\n"
                   "You said: /slash.\nYou said: [image] with image.\n"
                   "You said: last line.\n"), repr(out)
    assert "unknown command /bogus" in err, err
    opened = s.requests("session.open")[0]
    assert opened["options"] == {"system": "terse", "temperature": 0.5, "context_size": 512}
    sends = s.requests("session.send")
    assert [m["content"][-1]["text"] for m in sends] == ["hello", "/slash", "with image",
                                                          "last line"]
    assert sends[0]["_fds"][0]["data"] == "\x89PNG" " b" and sends[1]["_fds"] == []
    assert s.requests("session.truncate")[0]["keep"] == 0


def test_chat_session_closed(tmp):
    # The server closes s1 right after opening it. Type only once gemmactl has reported the
    # close, so the test does not race the event against stdin.
    s = FakeGemmad(tmp, close_session=True)
    t = Pty(s, "chat")
    t.read_until("closed the session (idle)")
    t.write(b"one\n")
    t.read_until("You said: one.")
    t.write(b"/exit\n")
    assert t.wait() == 0, t.out
    assert t.out.count(b"closed the session") == 1, t.out
    assert len(s.requests("session.open")) == 2  # reopened for the message
    assert s.requests("session.send")[0]["session"] == "s2"


def test_chat_tty(tmp):
    s = FakeGemmad(tmp, endless=True)
    t = Pty(s, "chat")
    t.read_until("> ")
    t.write(b"go on\n")
    t.read_until("tok1 ")
    t.write(b"\x03")                      # Ctrl-C: stops the answer only
    t.read_until("cancelled")
    t.read_until("> ")
    t.write(b"/history\n")
    t.read_until("user: go on")
    t.read_until("> ")
    t.write(b"\x03")                      # at the prompt: leaves
    assert t.wait() == 0, t.out
    assert s.requests("cancel")[0]["target"] == s.requests("session.send")[0]["id"]


def test_progress_tty(tmp):
    s = FakeGemmad(tmp, hold_queued=True, thinking=True)
    t = Pty(s, "generate", "hi")
    t.read_until("queued (position 2)")   # the progress line, while the server holds
    s.release.set()
    t.read_until("You said: hi.")
    assert t.wait() == 0
    assert b"\x1b[2mLet me think." in t.out, t.out  # thinking dimmed
    s = FakeGemmad(tmp)
    t = Pty(s, "generate", "--json", "hi")
    assert t.wait() == 0
    assert b"queued" not in t.out and b'"text"' in t.out, t.out


def main():
    tests = [v for k, v in sorted(globals().items()) if k.startswith("test_")]
    failed = 0
    for test in tests:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                test(tmp)
                print("ok   ", test.__name__)
            except Exception:
                failed += 1
                print("FAIL ", test.__name__)
                traceback.print_exc()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
