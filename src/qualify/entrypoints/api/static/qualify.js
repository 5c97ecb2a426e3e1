/* Qualify web tracking: the pages this browser views, and who it is once it sends a form with an
   email. Install: <script src="https://YOUR-QUALIFY/t/qualify.js" async></script> (docs/tracking.md).
   Keeps one random visitor id (a first-party cookie and localStorage); nothing else is stored.
   Does nothing where the browser sends Global Privacy Control. */
(function () {
  "use strict";
  if (window.qualify && window.qualify.visitor) return; // included twice

  var script = document.currentScript || document.querySelector('script[src*="/t/qualify.js"]');
  if (!script || !script.src) return;
  var endpoint = new URL(script.src, location.href).origin + "/t/";
  var KEY = "qualify_vid";
  var ID = /^[A-Za-z0-9_-]{16,64}$/;
  var off = navigator.globalPrivacyControl === true;

  function randomId() {
    var bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.prototype.map.call(bytes, function (b) { return (b + 256).toString(16).slice(1); }).join("");
  }

  function remembered() {
    var match = document.cookie.match(/(?:^|;\s*)qualify_vid=([^;]+)/);
    var value = match ? match[1] : null;
    if (!value) try { value = localStorage.getItem(KEY); } catch (e) { /* storage blocked */ }
    return value && ID.test(value) ? value : null;
  }

  function remember(id) {
    var secure = location.protocol === "https:" ? "; Secure" : "";
    document.cookie = KEY + "=" + id + "; max-age=31536000; path=/; SameSite=Lax" + secure;
    try { localStorage.setItem(KEY, id); } catch (e) { /* storage blocked: the cookie will do */ }
  }

  var visitor = off ? null : remembered() || randomId();
  if (visitor) remember(visitor); // renews the cookie's year on every visit

  // A text/plain body keeps the request "simple": no CORS preflight, and both ways below still
  // deliver it while the page is being left (a form submit navigates away at once).
  function send(path, body) {
    if (!visitor) return;
    body.visitor = visitor;
    body.event_id = randomId();
    var text = JSON.stringify(body);
    if (navigator.sendBeacon && navigator.sendBeacon(endpoint + path, text)) return;
    if (window.fetch) {
      fetch(endpoint + path, { method: "POST", body: text, keepalive: true, headers: { "Content-Type": "text/plain" } })
        .catch(function () { /* tracking never breaks the page */ });
    }
  }

  function clip(text, limit) { return text ? String(text).slice(0, limit) : null; }

  function page() {
    send("events", { url: clip(location.href, 2048), title: clip(document.title, 300), referrer: clip(document.referrer, 2048) });
  }

  function identify(person) {
    if (!person || !person.email) return;
    send("identify", {
      email: String(person.email).trim(),
      first_name: clip(person.first_name, 100),
      last_name: clip(person.last_name, 100),
      form: clip(person.form, 100),
      url: clip(location.href, 2048),
      title: clip(document.title, 300)
    });
  }

  // The value of the first filled, visible-kind input of `form` that `test` accepts.
  function value(form, test) {
    for (var i = 0; i < form.elements.length; i++) {
      var input = form.elements[i];
      if (input.tagName !== "INPUT" || input.type === "hidden" || input.type === "password") continue;
      if (test(input, (input.getAttribute("autocomplete") || "").toLowerCase(), input.name || input.id || "")) {
        var text = input.value.trim();
        if (text) return text;
      }
    }
    return null;
  }

  function isEmail(input, auto, name) { return input.type === "email" || auto === "email" || /e-?mail/i.test(name); }
  function isFirst(input, auto, name) { return auto === "given-name" || /^(first[_-]?name|fname|given[_-]?name)$/i.test(name); }
  function isLast(input, auto, name) { return auto === "family-name" || /^(last[_-]?name|lname|surname|family[_-]?name)$/i.test(name); }

  // Any form with an email, added before or after this script ran; capture phase, so a form whose
  // own handler stops the event is seen too. `data-qualify-ignore` on a form leaves it alone.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement) || form.hasAttribute("data-qualify-ignore")) return;
    var email = value(form, isEmail);
    if (!email || email.indexOf("@") < 1) return;
    identify({
      email: email,
      first_name: value(form, isFirst),
      last_name: value(form, isLast),
      form: form.getAttribute("id") || form.getAttribute("name") // not form.id: an input named "id" shadows it
    });
  }, true);

  // For single-page sites (call qualify.page() after a route change) and custom forms.
  window.qualify = { visitor: visitor, page: page, identify: identify };
  page();
})();
