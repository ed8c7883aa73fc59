// The gateway's playground: send one prompt, watch the answer stream in, see the limits left.
// Plain browser JavaScript, no build step; the page's CSP allows this file and same-origin calls.
"use strict";

const STRINGS = {
  en: {
    title: "Gateway playground",
    language: "Language",
    model: "Model",
    listModels: "List models",
    listModelsHint: "Asks GET /v1/models, which counts as one call.",
    route: "Route",
    legacyNote: "(legacy envelope)",
    openaiNote: "(OpenAI format)",
    prompt: "Prompt",
    keyTitle: "Gateway key",
    keyLabel: "Gateway key (optional)",
    keyHint: "Kept in this tab only and sent as Authorization: Bearer.",
    send: "Send",
    stop: "Stop",
    answer: "Answer",
    limits: "Your limits",
    remaining: "Calls left",
    limit: "Limit",
    reset: "Frees a call in",
    retryAfter: "Retry after",
    windows: "Every window",
    seconds: "{n} s",
    sending: "Waiting for the answer…",
    streaming: "Receiving…",
    done: "Done.",
    stopped: "Stopped.",
    needKey: "This gateway wants a key: enter it under “Gateway key” and send again.",
    networkError: "The gateway could not be reached.",
    badReply: "The gateway answered with something this page cannot read (HTTP {status}).",
    noPrompt: "Type a prompt first.",
    noModel: "Name a model first.",
    modelsLoaded: "{n} models listed.",
    cutShort: "The answer's stream ended before it was complete.",
  },
  zh_CN: {
    title: "网关试用台",
    language: "语言",
    model: "模型",
    listModels: "列出模型",
    listModelsHint: "调用 GET /v1/models，计为一次请求。",
    route: "接口",
    legacyNote: "（旧版信封格式）",
    openaiNote: "（OpenAI 格式）",
    prompt: "提示词",
    keyTitle: "网关密钥",
    keyLabel: "网关密钥（可选）",
    keyHint: "仅保存在此标签页中，并以 Authorization: Bearer 发送。",
    send: "发送",
    stop: "停止",
    answer: "回答",
    limits: "你的限额",
    remaining: "剩余次数",
    limit: "上限",
    reset: "释放一次额度还需",
    retryAfter: "重试等待",
    windows: "各时间窗口",
    seconds: "{n} 秒",
    sending: "正在等待回答…",
    streaming: "正在接收…",
    done: "完成。",
    stopped: "已停止。",
    needKey: "此网关需要密钥：请在“网关密钥”中填写后重新发送。",
    networkError: "无法连接到网关。",
    badReply: "无法解析网关的回复（HTTP {status}）。",
    noPrompt: "请先输入提示词。",
    noModel: "请先填写模型。",
    modelsLoaded: "已列出 {n} 个模型。",
    cutShort: "回答流在完成前中断。",
  },
  zh_TW: {
    title: "閘道試用台",
    language: "語言",
    model: "模型",
    listModels: "列出模型",
    listModelsHint: "呼叫 GET /v1/models，計為一次請求。",
    route: "介面",
    legacyNote: "（舊版信封格式）",
    openaiNote: "（OpenAI 格式）",
    prompt: "提示詞",
    keyTitle: "閘道金鑰",
    keyLabel: "閘道金鑰（選填）",
    keyHint: "僅保存在此分頁中，並以 Authorization: Bearer 傳送。",
    send: "傳送",
    stop: "停止",
    answer: "回答",
    limits: "你的限額",
    remaining: "剩餘次數",
    limit: "上限",
    reset: "釋出一次額度還需",
    retryAfter: "重試等待",
    windows: "各時間窗口",
    seconds: "{n} 秒",
    sending: "正在等待回答…",
    streaming: "正在接收…",
    done: "完成。",
    stopped: "已停止。",
    needKey: "此閘道需要金鑰：請在「閘道金鑰」中填寫後重新傳送。",
    networkError: "無法連線到閘道。",
    badReply: "無法解析閘道的回覆（HTTP {status}）。",
    noPrompt: "請先輸入提示詞。",
    noModel: "請先填寫模型。",
    modelsLoaded: "已列出 {n} 個模型。",
    cutShort: "回答串流在完成前中斷。",
  },
  ru_RU: {
    title: "Песочница шлюза",
    language: "Язык",
    model: "Модель",
    listModels: "Список моделей",
    listModelsHint: "Запрашивает GET /v1/models; это считается одним вызовом.",
    route: "Маршрут",
    legacyNote: "(формат исходного проекта)",
    openaiNote: "(формат OpenAI)",
    prompt: "Запрос",
    keyTitle: "Ключ шлюза",
    keyLabel: "Ключ шлюза (необязательно)",
    keyHint: "Хранится только в этой вкладке и отправляется как Authorization: Bearer.",
    send: "Отправить",
    stop: "Остановить",
    answer: "Ответ",
    limits: "Ваши лимиты",
    remaining: "Осталось вызовов",
    limit: "Предел",
    reset: "Вызов освободится через",
    retryAfter: "Повторить через",
    windows: "По окнам",
    seconds: "{n} с",
    sending: "Ждём ответа…",
    streaming: "Получаем ответ…",
    done: "Готово.",
    stopped: "Остановлено.",
    needKey: "Шлюзу нужен ключ: введите его в поле «Ключ шлюза» и отправьте снова.",
    networkError: "Не удалось связаться со шлюзом.",
    badReply: "Ответ шлюза не удалось прочитать (HTTP {status}).",
    noPrompt: "Сначала введите запрос.",
    noModel: "Сначала укажите модель.",
    modelsLoaded: "Найдено моделей: {n}.",
    cutShort: "Поток ответа оборвался раньше конца.",
  },
};

// The UI language's tag for <html lang> and for Accept-Language, which picks the gateway's words.
const TAGS = { en: "en", zh_CN: "zh-CN", zh_TW: "zh-TW", ru_RU: "ru-RU" };
const KEY_STORE = "gateway-playground-key";
const LANGUAGE_STORE = "gateway-playground-language";

const $ = (id) => document.getElementById(id);
const meta = (name) => document.querySelector(`meta[name="${name}"]`).content;

const state = { language: "en", status: null, controller: null };

function pickLanguage(tag) {
  const lower = String(tag || "").toLowerCase().replace(/_/g, "-");
  if (lower.startsWith("ru")) return "ru_RU";
  if (lower.startsWith("zh")) {
    const traditional = /-(hant|tw|hk|mo)\b/.test(lower) && !/-hans\b/.test(lower);
    return traditional ? "zh_TW" : "zh_CN";
  }
  return "en";
}

function t(key, params = {}) {
  const text = STRINGS[state.language][key] ?? STRINGS.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => String(params[name] ?? ""));
}

function applyLanguage(language) {
  state.language = STRINGS[language] ? language : "en";
  document.documentElement.lang = TAGS[state.language];
  $("language").value = state.language;
  for (const element of document.querySelectorAll("[data-i18n]")) {
    element.textContent = t(element.dataset.i18n);
  }
  document.title = t("title");
  if (state.status) setStatus(...state.status);
  const retry = $("retry-after");
  if (retry.dataset.seconds) retry.textContent = t("seconds", { n: retry.dataset.seconds });
  const reset = $("limit-reset");
  if (reset.dataset.seconds) reset.textContent = t("seconds", { n: reset.dataset.seconds });
}

function setStatus(key, params) {
  state.status = key ? [key, params] : null;
  $("status").textContent = key ? t(key, params) : "";
}

// The gateway's reason first, then (if any) what the page suggests doing about it.
function showError(...lines) {
  const box = $("error");
  box.replaceChildren(
    ...lines.map((line) => Object.assign(document.createElement("p"), { textContent: line })),
  );
  box.hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

// The reason in either envelope: the legacy {"code","msg","data":{"response"}} or OpenAI's.
function reasonOf(body) {
  if (body && typeof body === "object") {
    if (body.data && typeof body.data.response === "string") return body.data.response;
    if (body.error && typeof body.error.message === "string") return body.error.message;
  }
  return null;
}

function showSeconds(id, seconds) {
  const element = $(id);
  if (seconds === null || seconds === "") {
    delete element.dataset.seconds;
    element.textContent = "–";
  } else {
    element.dataset.seconds = seconds;
    element.textContent = t("seconds", { n: seconds });
  }
}

function showLimits(headers) {
  if (!headers.has("RateLimit-Policy") && !headers.has("X-RateLimit-Remaining")) return;
  $("limit-remaining").textContent = headers.get("X-RateLimit-Remaining") ?? "–";
  $("limit-limit").textContent = headers.get("X-RateLimit-Limit") ?? "–";
  showSeconds("limit-reset", headers.get("X-RateLimit-Reset"));
  showSeconds("retry-after", headers.get("Retry-After"));
  // RateLimit: "1m";r=2;t=41, "1h";r=46;t=3012 -> one "name: left (seconds)" item per window.
  const windows = (headers.get("RateLimit") || "")
    .split(",")
    .map((item) => {
      const [name, ...params] = item.trim().split(";");
      const values = Object.fromEntries(params.map((p) => p.trim().split("=")));
      return name ? `${name.replace(/"/g, "")}: ${values.r ?? "?"} (${t("seconds", { n: values.t ?? "?" })})` : "";
    })
    .filter(Boolean);
  $("limit-windows").textContent = windows.length ? windows.join(" · ") : "–";
}

function requestHeaders(json) {
  const headers = { "Accept-Language": TAGS[state.language] };
  if (json) headers["Content-Type"] = "application/json";
  const key = $("key").value.trim();
  if (key) headers.Authorization = `Bearer ${key}`;
  return headers;
}

async function readJson(response) {
  try {
    return await response.json();
  } catch {
    return null;
  }
}

async function showFailure(response) {
  const reason = reasonOf(await readJson(response)) ?? t("badReply", { status: response.status });
  if (response.status === 401) {
    showError(reason, t("needKey"));
    $("key-box").open = true;
    $("key").focus();
  } else {
    showError(reason);
  }
  setStatus(null);
}

// Server-sent events, parsed as bytes arrive: a blank line ends an event; ":" lines are comments.
function eventParser(onEvent) {
  let pending = "";
  let name = "";
  let data = [];
  return (text, last = false) => {
    pending += text;
    // A CR at the very end may be the first half of a CRLF still on its way.
    const cut = !last && pending.endsWith("\r") ? pending.length - 1 : pending.length;
    const lines = pending.slice(0, cut).split(/\r\n|\r|\n/);
    pending = (last ? "" : lines.pop()) + pending.slice(cut);
    for (const line of lines) {
      if (line === "") {
        if (data.length) onEvent(name || "message", data.join("\n"));
        name = "";
        data = [];
      } else if (!line.startsWith(":")) {
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") name = value;
        else if (field === "data") data.push(value);
      }
    }
  };
}

// What each route's events mean; each returns true once the stream has said its last word.
const ROUTES = {
  legacy: {
    path: () => meta("gateway-route"),
    body: (model, prompt) => ({ user_content: prompt, model, stream: true }),
    onEvent(name, data, answer) {
      if (name === "delta") answer(JSON.parse(data).delta ?? "");
      else if (name === "error") showError(reasonOf(JSON.parse(data)) ?? data);
      return name === "done" || name === "error";
    },
    whole: (body) => body?.data?.response ?? "",
  },
  openai: {
    path: () => "/v1/chat/completions",
    body: (model, prompt) => ({ model, messages: [{ role: "user", content: prompt }], stream: true }),
    onEvent(name, data, answer) {
      if (data === "[DONE]") return true;
      const chunk = JSON.parse(data);
      if (chunk.error) {
        showError(reasonOf(chunk) ?? data);
        return true;
      }
      for (const choice of chunk.choices ?? []) answer(choice.delta?.content ?? "");
      return false;
    },
    whole: (body) => body?.choices?.[0]?.message?.content ?? "",
  },
};

async function readStream(response, route, answer) {
  let finished = false;
  const feed = eventParser((name, data) => {
    if (!finished) finished = route.onEvent(name, data, answer);
  });
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  while (!finished) {
    const { value, done } = await reader.read();
    if (done) break;
    feed(decoder.decode(value, { stream: true }));
  }
  if (!finished) feed(decoder.decode(), true);
  if (finished) await reader.cancel().catch(() => {});
  return finished;
}

async function send(event) {
  event.preventDefault();
  clearError();
  const model = $("model").value.trim();
  const prompt = $("prompt").value.trim();
  if (!model || !prompt) {
    showError(t(model ? "noPrompt" : "noModel"));
    (model ? $("prompt") : $("model")).focus();
    return;
  }
  const route = ROUTES[document.querySelector('input[name="route"]:checked').value];
  const output = $("answer");
  output.textContent = "";
  const answer = (text) => {
    if (text) output.append(document.createTextNode(text));
  };
  state.controller = new AbortController();
  $("send").disabled = true;
  $("stop").disabled = false;
  output.setAttribute("aria-busy", "true");
  setStatus("sending");
  try {
    const response = await fetch(route.path(), {
      method: "POST",
      headers: requestHeaders(true),
      body: JSON.stringify(route.body(model, prompt)),
      signal: state.controller.signal,
      cache: "no-store",
    });
    showLimits(response.headers);
    if (!response.ok) {
      await showFailure(response);
      return;
    }
    if ((response.headers.get("Content-Type") || "").startsWith("text/event-stream")) {
      setStatus("streaming");
      const finished = await readStream(response, route, answer);
      if (!finished) showError(t("cutShort"));
    } else {
      answer(route.whole(await readJson(response)));
    }
    setStatus($("error").hidden ? "done" : null);
  } catch (error) {
    if (error.name === "AbortError") {
      setStatus("stopped");
    } else {
      setStatus(null);
      showError(error instanceof SyntaxError ? t("badReply", { status: 200 }) : t("networkError"));
    }
  } finally {
    state.controller = null;
    output.setAttribute("aria-busy", "false");
    $("send").disabled = false;
    $("stop").disabled = true;
  }
}

async function listModels() {
  clearError();
  try {
    const response = await fetch("/v1/models", { headers: requestHeaders(false), cache: "no-store" });
    showLimits(response.headers);
    if (!response.ok) {
      await showFailure(response);
      return;
    }
    const body = await readJson(response);
    const names = (body?.data ?? []).map((model) => model.id).filter((id) => typeof id === "string");
    $("models").replaceChildren(
      ...names.map((id) => Object.assign(document.createElement("option"), { value: id })),
    );
    setStatus("modelsLoaded", { n: names.length });
  } catch {
    showError(t("networkError"));
  }
}

function start() {
  $("legacy-route").textContent = `POST ${meta("gateway-route")}`;
  $("model").value = meta("gateway-default-model");
  $("key").value = sessionStorage.getItem(KEY_STORE) ?? "";
  $("key").addEventListener("input", () => sessionStorage.setItem(KEY_STORE, $("key").value.trim()));
  $("language").addEventListener("change", () => {
    applyLanguage($("language").value);
    localStorage.setItem(LANGUAGE_STORE, state.language);
  });
  $("ask").addEventListener("submit", send);
  $("stop").addEventListener("click", () => state.controller?.abort());
  $("list-models").addEventListener("click", listModels);
  applyLanguage(localStorage.getItem(LANGUAGE_STORE) ?? pickLanguage(navigator.language));
}

start();
