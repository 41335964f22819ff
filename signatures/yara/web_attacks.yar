// Web attacks seen in payloads on an extranet segment: what arrives at a government portal
// (requests) and what a compromised one sends back. Written by the Palisade team.
//
// Conventions (read by the agent, see signatures/yara/README.md):
//   meta id        stable rule id carried by alerts (palisade.net.yara.*)
//   meta severity  info | low | medium | high | critical
//   meta category  sqli | cmdi | traversal | webshell | rce
//   meta scope     network: these rules read requests and responses; the host file scanner
//                  skips them (an SQL injection rule would flag every PHP file that builds a query)
// Every rule has must-match and must-not-match cases in tests/cases.toml.
// Patterns must have a literal anchor of a few bytes: the agent refuses slow patterns.

rule sqli_union_select
{
    meta:
        id = "palisade.net.yara.sqli_union_select"
        description = "SQL injection: UNION SELECT in a request"
        severity = "high"
        category = "sqli"
        scope = "network"
    strings:
        // Plain, '+'/%20-encoded and comment-separated forms.
        $plain = /union([ \t]|\+|%20|%09|\/\*[^*]{0,32}\*\/)+(all([ \t]|\+|%20|%09)+)?select([ \t]|\+|%20|%09|\/\*)/ nocase
        $enc = /union(%2520|%0a|%0d)+(all(%2520|%0a|%0d)+)?select/ nocase
    condition:
        any of them
}

rule sqli_boolean_tautology
{
    meta:
        id = "palisade.net.yara.sqli_tautology"
        description = "SQL injection: quote-terminated OR tautology"
        severity = "high"
        category = "sqli"
        scope = "network"
    strings:
        $a = /'([ \t]|\+|%20)*or([ \t]|\+|%20)+'?1'?([ \t]|\+|%20)*=([ \t]|\+|%20)*'?1/ nocase
        $b = /%27([ \t]|\+|%20)*or([ \t]|\+|%20)+(%27)?1(%27)?([ \t]|\+|%20)*(=|%3d)([ \t]|\+|%20)*(%27)?1/ nocase
        $c = "' or ''='" nocase
        $d = /admin'([ \t]|\+|%20)*(--|#|%23)/ nocase
    condition:
        any of them
}

rule sqli_time_and_error_based
{
    meta:
        id = "palisade.net.yara.sqli_blind"
        description = "SQL injection: time-based or error-based probe"
        severity = "high"
        category = "sqli"
        scope = "network"
    strings:
        $sleep = /(and|or|\|\|)([ \t]|\+|%20)+sleep\([0-9]{1,3}\)/ nocase
        $bench = /benchmark\([0-9]{4,12},/ nocase
        $waitfor = /waitfor([ \t]|\+|%20)+delay([ \t]|\+|%20)+'0:0/ nocase
        $pgsleep = /pg_sleep\([0-9]{1,3}\)/ nocase
        $extract = /(extractvalue|updatexml)\([^)]{0,40}concat\(/ nocase
        $schema = /from([ \t]|\+|%20)+information_schema\.(tables|columns)/ nocase
        $xp = "xp_cmdshell" nocase
    condition:
        any of them
}

rule cmdi_shell_metachar
{
    meta:
        id = "palisade.net.yara.cmd_injection"
        description = "Command injection: shell metacharacter followed by a command"
        severity = "critical"
        category = "cmdi"
        scope = "network"
    strings:
        $sep_cmd = /(;|%3b|\|\||%7c%7c|&&|%26%26|\$\(|%24%28|`)([ \t]|\+|%20)*(cat|id|whoami|uname|wget|curl|nc|ncat|bash|sh|ping|nslookup)([ \t]|\+|%20|;|\)|`|%29)/ nocase
        $ifs = "${IFS}"
        $ifs_enc = "%24%7BIFS%7D" nocase
        $devtcp = /\/dev\/tcp\/[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\/[0-9]{1,5}/
        $nc_e = /nc(at)?([ \t]|\+|%20)+-e([ \t]|\+|%20)+\/bin\/(ba)?sh/
        $pipe_sh = /\|([ \t]|\+|%20)*(ba)?sh([ \t]|\+|%20)+-i/
    condition:
        any of them
}

rule path_traversal
{
    meta:
        id = "palisade.net.yara.path_traversal"
        description = "Path traversal to a sensitive file"
        severity = "high"
        category = "traversal"
        scope = "network"
    strings:
        $t1 = "../"
        $t2 = "..%2f" nocase
        $t3 = "%2e%2e%2f" nocase
        $t4 = "%2e%2e/" nocase
        $t5 = "..\\"
        $t6 = "..%5c" nocase
        $t7 = "%252e%252e%252f" nocase
        $t8 = "..%c0%af" nocase
        $f1 = "etc/passwd"
        $f2 = "etc%2fpasswd" nocase
        $f3 = "etc/shadow"
        $f4 = "win.ini" nocase
        $f5 = "boot.ini" nocase
        $f6 = "WEB-INF/web.xml" nocase
        $f7 = "proc/self/environ"
    condition:
        // A traversal step, repeated, reaching a file worth stealing.
        (#t1 + #t2 + #t3 + #t4 + #t5 + #t6 + #t7 + #t8) >= 2 and any of ($f*)
}

rule webshell_upload_php
{
    meta:
        id = "palisade.net.yara.webshell_upload"
        description = "Webshell upload: server-side script with code execution in a multipart upload"
        severity = "critical"
        category = "webshell"
        scope = "network"
    strings:
        $form = "Content-Disposition: form-data" nocase
        $name = /filename="[^"\r\n]{1,128}\.(php[0-9]?|phtml|pht|jsp|jspx|asp|aspx|ashx|cer|asa)"/ nocase
        $php = "<?php" nocase
        $php_short = "<?="
        $asp = "<%" 
        $e1 = /(eval|assert|system|passthru|shell_exec|exec|popen|proc_open)[ \t]*\([ \t]*(@?\$_(POST|GET|REQUEST|COOKIE)|base64_decode|gzinflate|str_rot13)/ nocase
        $e2 = /Runtime\.getRuntime\(\)\.exec\([ \t]*request\.getParameter/
        $e3 = /eval[ \t]*\(?[ \t]*request(\.item)?[ \t]*\(/ nocase
        $e4 = "Request.Form[" nocase
    condition:
        $form and $name and any of ($php, $php_short, $asp) and any of ($e*)
}

rule webshell_known_families
{
    meta:
        id = "palisade.net.yara.webshell_family"
        description = "Known webshell families (China Chopper, Behinder, Godzilla, AntSword) in requests or pages"
        severity = "critical"
        category = "webshell"
        scope = "network"
    strings:
        // China Chopper one-liners (PHP, ASP, ASPX).
        $chopper_php = /<\?php[ \t]+@?eval\([ \t]*\$_(POST|REQUEST)\[/ nocase
        $chopper_asp = /<%[ \t]*eval[ \t]+request\([ \t]*"/ nocase
        $chopper_aspx = /<%@[ \t]*Page[ \t]+Language[ \t]*=[ \t]*"Jscript"[ \t]*%>[ \t\r\n]*<%[ \t]*eval\(/ nocase
        // China Chopper client request body.
        $chopper_req = /=@eval\(base64_decode\(\$_POST\[/ nocase
        // Behinder (冰蝎) server stub: AES key in the session, decrypts the request body.
        $behinder = /session_start\(\);[ \t\r\n]*\$key[ \t]*=[ \t]*"[0-9a-f]{16}";[ \t]*\$_SESSION\['k'\]/
        $behinder_jsp = "new javax.crypto.spec.SecretKeySpec(k.getBytes(),\"AES\")"
        // Godzilla (哥斯拉) PHP stub.
        $godzilla = /\$payloadName[ \t]*=[ \t]*'payload';/
        // AntSword (蚁剑) default request: ini_set display_errors then set_time_limit in base64.
        $antsword = "@ini_set(\"display_errors\", \"0\");@set_time_limit(0);"
    condition:
        any of them
}

rule log4shell_jndi
{
    meta:
        id = "palisade.net.yara.log4shell"
        description = "Log4Shell (CVE-2021-44228) JNDI lookup, plain or obfuscated"
        severity = "critical"
        category = "rce"
        scope = "network"
    strings:
        $plain = /\$\{jndi:(ldaps?|rmi|dns|iiop|nis|nds|corba|http):\/\// nocase
        // ${${lower:j}ndi:, ${${::-j}${::-n}di:, ${${env:X:-j}ndi: ...
        $obfuscated = /\$\{\$\{(lower:|upper:|::-|env:[a-z_]{0,16}:-)[^}]{0,4}j\}/ nocase
        $enc = "%24%7Bjndi%3A" nocase
    condition:
        any of them
}

rule struts_ognl
{
    meta:
        id = "palisade.net.yara.struts_ognl"
        description = "Apache Struts OGNL injection (S2-045/S2-046/S2-057 style)"
        severity = "critical"
        category = "rce"
        scope = "network"
    strings:
        $member = "#_memberAccess" nocase
        $ctx = "@ognl.OgnlContext@DEFAULT_MEMBER_ACCESS"
        $multipart = "(#_='multipart/form-data')"
        $exec = "@java.lang.Runtime@getRuntime().exec(" nocase
    condition:
        any of them
}
