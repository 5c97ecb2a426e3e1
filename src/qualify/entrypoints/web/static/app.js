// In-place actions: a form marked data-inplace posts with fetch and the row it sits in is
// replaced by the HTML the server answers. Without JavaScript the form posts as usual.
document.addEventListener("submit", async (event) => {
  const form = event.target;
  if (!(form instanceof HTMLFormElement) || !form.hasAttribute("data-inplace")) return;
  event.preventDefault();
  const submitter = event.submitter;
  const action = (submitter && submitter.getAttribute("formaction")) || form.action;
  const row = form.closest("[data-row]");
  const body = new FormData(form);
  form.querySelectorAll("button").forEach((b) => { b.disabled = true; });
  try {
    const answer = await fetch(action, { method: "POST", body, headers: { "X-Requested-With": "fetch" } });
    const html = await answer.text();
    if (row && html.trim().startsWith("<tr")) {
      const holder = document.createElement("tbody");
      holder.innerHTML = html.trim();
      const fresh = holder.firstElementChild;
      row.replaceWith(fresh);
      const status = fresh.querySelector("[role=status], [role=alert]");
      if (status) status.setAttribute("tabindex", "-1"), status.focus();
    } else {
      window.location.reload();
    }
  } catch (problem) {
    form.querySelectorAll("button").forEach((b) => { b.disabled = false; });
    alert("The action could not be sent: " + problem);
  }
});

// The model editor: the candidate is checked as you type (after a pause), and the backtest form
// posts in place.
const editor = document.getElementById("editor");
if (editor) {
  const text = editor.querySelector("textarea");
  const status = document.getElementById("validation");
  let timer = null;
  const check = async () => {
    try {
      const body = new FormData(editor);
      const answer = await fetch(editor.dataset.validate, { method: "POST", body, headers: { "X-Requested-With": "fetch" } });
      status.innerHTML = await answer.text();
    } catch (problem) {
      status.textContent = "Could not check the model: " + problem;
    }
  };
  // Line numbers beside the text, so that "line 12" in a problem is found at a glance.
  const gutter = document.createElement("pre");
  gutter.className = "gutter";
  gutter.setAttribute("aria-hidden", "true");
  const frame = document.createElement("div");
  frame.className = "code";
  text.parentNode.insertBefore(frame, text);
  frame.append(gutter, text);
  const number = () => {
    const lines = text.value.split("\n").length;
    gutter.textContent = Array.from({ length: lines }, (_, i) => String(i + 1)).join("\n");
    gutter.style.height = text.offsetHeight + "px";  // as tall as the text box, whatever it holds
    gutter.scrollTop = text.scrollTop;
  };
  new ResizeObserver(number).observe(text);
  text.addEventListener("scroll", () => { gutter.scrollTop = text.scrollTop; });
  text.addEventListener("input", number);
  number();
  text.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(check, 300); });
  editor.addEventListener("submit", async (event) => {
    if (event.submitter && event.submitter.hasAttribute("data-plain")) return;  // a whole-page post
    event.preventDefault();
    const target = document.getElementById("backtest");
    const busy = document.createElement("p");
    busy.setAttribute("role", "status");
    busy.textContent = editor.dataset.busy || "Replaying the history under both models…";
    target.replaceChildren(busy);
    try {
      const answer = await fetch(editor.action, { method: "POST", body: new FormData(editor), headers: { "X-Requested-With": "fetch" } });
      target.innerHTML = await answer.text();
    } catch (problem) {
      target.textContent = "The backtest could not be run: " + problem;
    }
  });
  check();
}
