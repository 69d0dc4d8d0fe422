// Starts Swagger UI on /docs (api/routes/docs.py): a file, not an inline script, so that the
// pages' Content-Security-Policy allows no inline script at all. No validator badge: it would
// send the schema to another site.
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
});
