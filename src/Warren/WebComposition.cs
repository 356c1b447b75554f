using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.Configuration;

namespace Warren;

/// <summary>The HTTP(S) and DNS front doors (wired to the platform by the Edge adapters).</summary>
public static class WebComposition
{
    public static WebApplicationBuilder AddWarrenWebAndDns(this WebApplicationBuilder builder, IConfiguration configuration)
    {
        return builder;
    }

    public static WebApplication UseWarrenWeb(this WebApplication app) => app;
}
