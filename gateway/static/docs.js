// Swagger UI for the gateway's own OpenAPI document. A file rather than an inline script, so
// the page's Content-Security-Policy allows scripts from the gateway only.
"use strict";

window.ui = SwaggerUIBundle({
  url: new URL("openapi.json", document.baseURI).href,
  dom_id: "#swagger-ui",
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
  // Its default sends the document to a public validator: nothing leaves the gateway.
  validatorUrl: null,
  tryItOutEnabled: false,
});
