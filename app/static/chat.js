// The hello-ship chat page: starts an answer with POST /chat/streams and reads it with
// EventSource, which reconnects by itself after a dropped connection; the server resumes
// after the last frame the page got (Last-Event-ID), so the page only appends what arrives.
//
// Model output is text, never markup: it only ever reaches the page through Text nodes.
"use strict";

(() => {
  const KEY_STORAGE = "hello-ship.tenant-key";

  const byId = (id) => document.getElementById(id);
  const form = byId("composer");
  const box = byId("message");
  const sendButton = byId("send");
  const stopButton = byId("stop");
  const log = byId("conversation");
  const empty = byId("empty");
  const settings = byId("settings");
  const keyInput = byId("tenant-key");

  // What the model is sent: the finished exchanges, in order.
  let history = [];
  // The answer being written now, or null.
  let current = null;

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // -- the tenant key: this tab only ------------------------------------------------------

  function storedKey() {
    try {
      return sessionStorage.getItem(KEY_STORAGE) || "";
    } catch {
      return ""; // storage refused (privacy settings): the field still works for this page
    }
  }

  function storeKey(value) {
    try {
      if (value) sessionStorage.setItem(KEY_STORAGE, value);
      else sessionStorage.removeItem(KEY_STORAGE);
    } catch {
      // as above
    }
    settings.classList.toggle("has-key", Boolean(value));
  }

  function authHeaders() {
    const key = keyInput.value.trim();
    return key ? { Authorization: `Bearer ${key}` } : {};
  }

  // -- scrolling: follow the answer unless the reader scrolled up --------------------------

  const scroller = document.scrollingElement || document.documentElement;

  function nearBottom() {
    return scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 80;
  }

  function keepInView(wasNearBottom) {
    if (wasNearBottom) scroller.scrollTop = scroller.scrollHeight;
  }

  // -- turns ------------------------------------------------------------------------------

  function addTurn(role, text) {
    const follow = nearBottom();
    empty.hidden = true;
    const turn = element("article", `turn ${role}`);
    const head = element("header", "turn-head");
    head.append(element("span", "who", role === "user" ? "You" : "Assistant"));
    const body = element("div", "text");
    body.textContent = text;
    turn.append(head, body);
    log.append(turn);
    keepInView(follow);
    return { turn, head, body };
  }

  async function errorOf(response) {
    let error = {};
    try {
      error = (await response.json()).error || {};
    } catch {
      // not our envelope (a proxy's page): say what we know
    }
    return {
      code: error.code || `http_${response.status}`,
      message: error.message || `The service answered with status ${response.status}.`,
      request_id: error.request_id || response.headers.get("x-request-id") || "",
      retryable: response.status === 429 || response.status >= 500,
    };
  }

  class Answer {
    constructor(prompt) {
      this.prompt = prompt;
      const { turn, head, body } = addTurn("assistant", "");
      this.turn = turn;
      this.route = element("span", "route");
      this.route.hidden = true;
      head.append(this.route);
      this.text = document.createTextNode("");
      body.append(this.text);
      this.status = element("p", "turn-status");
      this.status.setAttribute("role", "status");
      this.status.hidden = true;
      turn.append(this.status);
      turn.classList.add("streaming", "waiting");
      turn.setAttribute("aria-busy", "true");
      this.source = null;
      this.streamUrl = "";
      this.ended = false;
    }

    async start(messages) {
      let response;
      try {
        response = await fetch("/chat/streams", {
          method: "POST",
          headers: { "Content-Type": "application/json", ...authHeaders() },
          body: JSON.stringify({ messages }),
        });
      } catch {
        this.fail({ message: "The service could not be reached. Check the connection and "
                             + "try again.", retryable: true });
        return;
      }
      if (this.ended) { // stopped while it was starting
        if (response.status === 201) this.cancel((await response.json()).stream_url);
        return;
      }
      if (response.status !== 201) {
        const error = await errorOf(response);
        if (response.status === 401) {
          settings.open = true;
          error.message += keyInput.value.trim()
            ? " Check the tenant key for this tab above."
            : " Set a tenant key for this tab above.";
        }
        this.fail(error);
        return;
      }
      this.streamUrl = (await response.json()).stream_url;
      this.listen(this.streamUrl);
    }

    listen(url) {
      const source = new EventSource(url);
      this.source = source;
      const frame = (handle) => (event) => {
        if (this.ended) return;
        this.setReconnecting(false);
        handle(JSON.parse(event.data));
      };
      source.addEventListener("open", () => this.setReconnecting(false));
      source.addEventListener("meta", frame((meta) => {
        this.route.textContent = meta.model_route;
        this.route.title = `Answered by ${meta.model_route}`;
        this.route.hidden = false;
      }));
      source.addEventListener("token", frame((token) => this.append(token.token)));
      source.addEventListener("done", frame((done) => this.finish(done)));
      // Two kinds share this name: our `error` frame (a MessageEvent with data) ends the
      // answer; a bare Event is the connection dropping, after which EventSource reconnects
      // by itself, unless it has given up (CLOSED: a refused resume, or a 204 at the end).
      source.addEventListener("error", (event) => {
        if (this.ended) return;
        if (event instanceof MessageEvent) {
          this.fail(JSON.parse(event.data));
        } else if (source.readyState === EventSource.CLOSED) {
          this.fail({ message: "The connection to the answer was lost and it could not be "
                               + "picked up again." });
        } else {
          this.setReconnecting(true);
        }
      });
    }

    append(text) {
      const follow = nearBottom();
      this.turn.classList.remove("waiting");
      this.text.appendData(text);
      keepInView(follow);
    }

    setReconnecting(on) {
      this.turn.classList.toggle("reconnecting", on);
      if (on) this.note("Connection lost. Reconnecting…", "reconnecting-note");
      else if (this.status.classList.contains("reconnecting-note")) this.clearNote();
    }

    note(text, className) {
      this.status.className = `turn-status ${className}`;
      this.status.textContent = text;
      this.status.hidden = false;
    }

    clearNote() {
      this.status.hidden = true;
      this.status.className = "turn-status";
      this.status.textContent = "";
    }

    finish(done) {
      if (done.cached) this.route.textContent += " · cached";
      if (done.finish_reason === "length") {
        this.note("Cut short: the answer reached its length limit.", "notice");
      } else if (done.finish_reason === "content_filter") {
        this.note("The model's content policy stopped this answer.", "notice");
      }
      this.end(true);
    }

    fail(error) {
      const banner = element("div", "banner");
      banner.setAttribute("role", "alert");
      banner.append(element("p", "banner-message", error.message || "The answer failed."));
      if (error.request_id) {
        const id = element("p", "banner-id", "Request ID ");
        id.append(element("code", "", error.request_id));
        if (error.incident_id) {
          id.append(" · Incident ", element("code", "", error.incident_id));
        }
        banner.append(id);
      }
      const nothingShown = this.text.length === 0;
      if (error.retryable && nothingShown) {
        const again = element("button", "quiet", "Try again");
        again.type = "button";
        again.addEventListener("click", () => send(this.prompt));
        banner.append(again);
      }
      this.turn.classList.add("failed");
      this.text.parentNode.hidden = nothingShown;
      this.turn.append(banner);
      this.end(!nothingShown); // the partial text stays, and the model sees what was shown
    }

    stop() {
      if (this.ended) return;
      this.note("Stopped.", "notice");
      this.end(this.text.length > 0);
      if (this.streamUrl) this.cancel(this.streamUrl);
    }

    cancel(streamUrl) {
      // The stream URL carries the stream's own token, which is enough to stop it.
      fetch(streamUrl, { method: "DELETE", keepalive: true }).catch(() => {});
    }

    end(keep) {
      this.ended = true;
      if (this.source) this.source.close(); // else EventSource would reconnect
      this.setReconnecting(false);
      this.turn.classList.remove("streaming", "waiting");
      this.turn.setAttribute("aria-busy", "false");
      if (keep) {
        history.push({ role: "user", content: this.prompt },
                     { role: "assistant", content: this.text.data });
      }
      if (current === this) {
        current = null;
        setBusy(false);
      }
    }
  }

  // -- the composer -----------------------------------------------------------------------

  function setBusy(busy) {
    const hadFocus = document.activeElement === stopButton;
    stopButton.hidden = !busy;
    sendButton.hidden = busy;
    form.classList.toggle("busy", busy);
    updateSend();
    if (hadFocus && !busy) box.focus();
  }

  function updateSend() {
    sendButton.disabled = current !== null || box.value.trim() === "";
  }

  function send(prompt) {
    if (current || !prompt.trim()) return;
    const messages = [...history, { role: "user", content: prompt }];
    addTurn("user", prompt);
    current = new Answer(prompt);
    setBusy(true);
    current.start(messages);
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (current || !box.value.trim()) return;
    const prompt = box.value;
    box.value = "";
    send(prompt);
  });

  box.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  box.addEventListener("input", updateSend);

  stopButton.addEventListener("click", () => {
    if (current) current.stop();
  });

  byId("new-chat").addEventListener("click", () => {
    if (current) current.stop();
    history = [];
    for (const turn of log.querySelectorAll(".turn")) turn.remove();
    empty.hidden = false;
    box.focus();
  });

  keyInput.value = storedKey();
  storeKey(keyInput.value.trim());
  keyInput.addEventListener("input", () => storeKey(keyInput.value.trim()));
  byId("forget-key").addEventListener("click", () => {
    keyInput.value = "";
    storeKey("");
    keyInput.focus();
  });

  // The key's panel closes like a menu: Escape, or a click elsewhere.
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && settings.open) {
      settings.open = false;
      settings.querySelector("summary").focus();
    }
  });
  document.addEventListener("click", (event) => {
    if (settings.open && !settings.contains(event.target)) settings.open = false;
  });

  updateSend();
  box.focus();
})();
