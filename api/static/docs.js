// Starts Swagger UI on /docs (api/routes/docs.py): a file, not an inline script, so that the
// pages' Content-Security-Policy allows no inline script at all. No validator badge: it would
// send the schema to another site. The schema and "Try it out" requests carry the token the
// dashboard stored (a browser sends no bearer token by itself); a 401 asks for one.
const TOKEN_KEY = "runlytics-token";

function withToken(request) {
  const token = localStorage.getItem(TOKEN_KEY);
  if (token) request.headers.Authorization = `Bearer ${token}`;
  return request;
}

function askToken() {
  if (document.getElementById("token-form")) return;
  const form = document.createElement("form");
  form.id = "token-form";
  const label = document.createElement("label");
  label.htmlFor = "token";
  label.textContent = "This server needs an API token: ";
  const input = Object.assign(document.createElement("input"), { type: "password", id: "token", autocomplete: "off" });
  const button = Object.assign(document.createElement("button"), { type: "submit", textContent: "Use token" });
  form.append(label, input, button);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    localStorage.setItem(TOKEN_KEY, input.value);
    location.reload();
  });
  document.body.prepend(form);
}

window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
  requestInterceptor: withToken,
  responseInterceptor: (response) => {
    if (response.status === 401) askToken();
    return response;
  },
});
