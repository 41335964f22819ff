// Webshells on disk: what the host file scanner looks for in web roots (PHP, JSP, ASP/ASPX
// sources). Written by the Palisade team.
//
// Conventions (read by the agent, see signatures/yara/README.md):
//   meta id        stable rule id carried by alerts (palisade.file.yara.*)
//   meta severity  info | low | medium | high | critical
//   meta category  webshell
//   meta scope     file: these rules read file contents; the network detector skips them (every
//                  download of a page's source would alert)
// Every rule has must-match and must-not-match cases (scope = "file") in tests/cases.toml.
// Patterns must have a literal anchor of a few bytes: the agent refuses slow patterns. No loops
// over filesize: a web root holds megabytes of minified JavaScript.
//
// What "request input" means below: PHP $_POST, $_GET, $_REQUEST, $_COOKIE, $_SERVER['HTTP_…'],
// php://input, getallheaders(); JSP request.getParameter/getReader/getInputStream; ASP(X)
// Request[…], Request.Form/QueryString/Item/Params.

rule php_exec_request_input
{
    meta:
        id = "palisade.file.yara.php_exec_request_input"
        description = "PHP webshell: eval/assert/system/passthru/shell_exec/exec/popen/create_function run request input"
        severity = "critical"
        category = "webshell"
        scope = "file"
    strings:
        // An opening PHP tag (not <?xml): an HTML page quoting PHP code escapes it as &lt;?php.
        $tag = /<\?(php|[=@$ \t\r\n])/ nocase
        // The call (not a method: ->exec( of PDO), up to two decoding wrappers, then request input.
        $call = /[^>:a-zA-Z0-9_$](eval|assert|system|passthru|shell_exec|exec|popen|proc_open|pcntl_exec)[ \t]*\([ \t]*@?[ \t]*((base64_decode|gzinflate|gzuncompress|str_rot13|strrev|stripslashes|trim|urldecode|rawurldecode|hex2bin)[ \t]*\([ \t]*@?[ \t]*){0,2}(\$_(POST|GET|REQUEST|COOKIE)\b|\$_SERVER[ \t]*\[[ \t]*["']HTTP_|\$\{[ \t]*["']_(POST|GET|REQUEST|COOKIE)["']|file_get_contents[ \t]*\([ \t]*["']php:\/\/input|getallheaders[ \t]*\()/ nocase
        // create_function('', $_POST['x']): the second argument is the function's body.
        $create = /create_function[ \t]*\([^,;)]{0,64},[ \t]*@?[ \t]*((base64_decode|gzinflate|gzuncompress|str_rot13|strrev|stripslashes)[ \t]*\([ \t]*){0,2}(\$_(POST|GET|REQUEST|COOKIE)\b|\$_SERVER[ \t]*\[[ \t]*["']HTTP_|file_get_contents[ \t]*\([ \t]*["']php:\/\/input|getallheaders[ \t]*\()/ nocase
        // echo `$_GET[c]`; : the backtick operator is shell_exec. Only as an expression of its
        // own: "SELECT * FROM `$_GET[t]`" quotes an SQL identifier.
        $backtick = /(echo|print|return|=|\()[ \t]*`[ \t]*\{?\$_(POST|GET|REQUEST|COOKIE)[ \t]*\[[^\]\r\n`]{1,64}\][ \t]*\}?[ \t]*`[ \t]*(;|\)|\.|\?>)/
    condition:
        $tag and any of ($call, $create, $backtick)
}

rule php_variable_function
{
    meta:
        id = "palisade.file.yara.php_variable_function"
        description = "PHP webshell: request input called as a function, or a dangerous function used as a callback or variable function"
        severity = "critical"
        category = "webshell"
        scope = "file"
    strings:
        $tag = /<\?(php|[=@$ \t\r\n])/ nocase
        // $_GET['f']($_GET['c']): a request value called as a function. The key is quoted or a
        // number, or the argument is request input too: "$_GET[callback]($json)" is a JSONP
        // wrapper in a string.
        $req_called = /\$_(POST|GET|REQUEST|COOKIE)[ \t]*\[[ \t]*(["'][^"'\]\r\n]{1,64}["']|[0-9]{1,4})[ \t]*\][ \t]*\(/
        $req_called_req = /\$_(POST|GET|REQUEST|COOKIE)[ \t]*\[[^\]\r\n]{1,64}\][ \t]*\([ \t]*@?\$_(POST|GET|REQUEST|COOKIE)/
        // call_user_func($_POST['f'], $_POST['a']): the same through a callback, with request
        // arguments (a dispatcher calling a request-named function without them is not a shell).
        $req_callback = /(call_user_func|forward_static_call|register_shutdown_function|register_tick_function)[ \t]*\([ \t]*@?\$_(POST|GET|REQUEST|COOKIE)[ \t]*\[[^\]\r\n]{1,64}\][ \t]*,[ \t]*@?\$_(POST|GET|REQUEST|COOKIE)[ \t]*\[/ nocase
        $req_callback_array = /(call_user_func_array|forward_static_call_array)[ \t]*\([ \t]*@?\$_(POST|GET|REQUEST|COOKIE)[ \t]*\[[^\]\r\n]{1,64}\][ \t]*,[ \t]*@?\$_(POST|GET|REQUEST|COOKIE)/ nocase
        // array_map('assert', ...), call_user_func('system', ...): a dangerous function by name.
        $name_callback = /(call_user_func|call_user_func_array|forward_static_call|forward_static_call_array|array_map|register_shutdown_function|register_tick_function)[ \t]*\([ \t]*["'](assert|system|passthru|shell_exec|exec|popen|proc_open|create_function)["'][ \t]*,/ nocase
        $name_callback_last = /(array_filter|array_walk|array_walk_recursive|usort|uasort|uksort|array_reduce|iterator_apply)[ \t]*\([^;]{1,128},[ \t]*["'](assert|system|passthru|shell_exec|exec|popen|create_function)["'][ \t]*[,)]/ nocase
        // $a = $_GET['a']; $a($_GET['b']);  (the call follows the assignment)
        $req_then_call = /\$[a-zA-Z_][a-zA-Z0-9_]{0,30}[ \t]*=[ \t]*@?\$_(POST|GET|REQUEST|COOKIE)[ \t]*\[[^\]\r\n]{1,64}\][ \t]*;[^;]{0,64}\$[a-zA-Z_][a-zA-Z0-9_]{0,30}[ \t]*\([ \t]*@?\$_(POST|GET|REQUEST|COOKIE)[ \t]*\[/
        // $f = 'assert'; $f($_POST['x']);
        $name_then_call = /=[ \t]*["'](assert|system|passthru|shell_exec|exec|popen|proc_open|create_function)["'][ \t]*;[^;]{0,64}\$[a-zA-Z_][a-zA-Z0-9_]{0,30}[ \t]*\([ \t]*@?\$_(POST|GET|REQUEST|COOKIE)[ \t]*\[/ nocase
        $input = /\$_(POST|GET|REQUEST|COOKIE)\b|php:\/\/input|getallheaders[ \t]*\(/
    condition:
        $tag and (
            any of ($req_*) or $name_then_call or
            ((any of ($name_callback*)) and $input)
        )
}

rule php_preg_replace_eval
{
    meta:
        id = "palisade.file.yara.php_preg_replace_eval"
        description = "PHP webshell: preg_replace with the /e modifier (evaluates the replacement) in a file reading request input"
        severity = "critical"
        category = "webshell"
        scope = "file"
    strings:
        $tag = /<\?(php|[=@$ \t\r\n])/ nocase
        // PHP delimiters are never letters, so letters between the closing delimiter and the
        // quote are modifiers: this needs an e among them.
        $e_modifier = /(preg_replace|preg_filter)[ \t]*\([ \t]*["'][^"'\r\n]{0,128}[\/#~!|@%}\])+][a-zA-Z]{0,5}e[a-zA-Z]{0,5}["'][ \t]*,/
        // mb_ereg_replace($pattern, $code, $subject, 'e')
        $mb_e = /mb_ereg_replace[ \t]*\([^;]{1,256},[ \t]*["'][a-z]{0,4}e[a-z]{0,4}["'][ \t]*\)/
        $input = /\$_(POST|GET|REQUEST|COOKIE)\b|php:\/\/input|getallheaders[ \t]*\(/
    condition:
        $tag and ($e_modifier or $mb_e) and $input
}

rule php_obfuscated_eval
{
    meta:
        id = "palisade.file.yara.php_obfuscated_eval"
        description = "PHP obfuscation chain: eval of decoded data (base64_decode, gzinflate, gzuncompress, str_rot13, strrev) or a long encoded blob"
        severity = "high"
        category = "webshell"
        scope = "file"
    strings:
        $tag = /<\?(php|[=@$ \t\r\n])/ nocase
        // eval(base64_decode(...)), assert(gzinflate(...)), ...
        $eval_decoded = /[^>:a-zA-Z0-9_$](eval|assert)[ \t]*\([ \t]*@?[ \t]*(base64_decode|gzinflate|gzuncompress|gzdecode|str_rot13|strrev|convert_uudecode|hex2bin|rawurldecode)[ \t]*\(/ nocase
        // eval('?>' . base64_decode(...)): decoded PHP with its own tags.
        $eval_tags = /(eval|assert)[ \t]*\([ \t]*["']\?>["'][ \t]*\.[ \t]*(base64_decode|gzinflate|gzuncompress|gzdecode|str_rot13|strrev|file_get_contents)[ \t]*\(/ nocase
        // Three decoders nested, wherever the result goes.
        $chain = /(gzinflate|gzuncompress|gzdecode|str_rot13|strrev|base64_decode|convert_uudecode)[ \t]*\([ \t]*(gzinflate|gzuncompress|gzdecode|str_rot13|strrev|base64_decode|convert_uudecode)[ \t]*\([ \t]*(gzinflate|gzuncompress|gzdecode|str_rot13|strrev|base64_decode|convert_uudecode)[ \t]*\(/ nocase
        // A decoder fed 512+ bytes of base64 (or rot13 of it), in a file that evals a variable.
        $blob = /(base64_decode|gzinflate|gzuncompress|str_rot13|strrev)[ \t]*\([ \t]*["'][A-Za-z0-9+\/=]{512}/ nocase
        $eval_var = /[^>:a-zA-Z0-9_$](eval|assert)[ \t]*\([ \t]*@?[ \t]*\$[a-zA-Z_]/ nocase
    condition:
        $tag and ($eval_decoded or $eval_tags or $chain or ($blob and $eval_var))
}

rule php_encoded_function_name
{
    meta:
        id = "palisade.file.yara.php_encoded_function_name"
        description = "PHP obfuscation: a dangerous function name spelled with hex/octal escapes, chr() or str_rot13/strrev"
        severity = "high"
        category = "webshell"
        scope = "file"
    strings:
        $tag = /<\?(php|[=@$ \t\r\n])/ nocase
        // "\x65\x76\x61\x6c" is "eval" (PHP accepts \x6C and \x6c alike).
        $hex_eval = "\\x65\\x76\\x61\\x6c" nocase
        $hex_assert = "\\x61\\x73\\x73\\x65\\x72\\x74" nocase
        $hex_system = "\\x73\\x79\\x73\\x74\\x65\\x6d" nocase
        $hex_passthru = "\\x70\\x61\\x73\\x73\\x74\\x68\\x72\\x75" nocase
        $hex_shell_exec = "\\x73\\x68\\x65\\x6c\\x6c\\x5f\\x65\\x78\\x65\\x63" nocase
        $hex_base64_decode = "\\x62\\x61\\x73\\x65\\x36\\x34\\x5f\\x64\\x65\\x63\\x6f\\x64\\x65" nocase
        $hex_create_function = "\\x63\\x72\\x65\\x61\\x74\\x65\\x5f\\x66\\x75\\x6e\\x63" nocase
        $hex_gzinflate = "\\x67\\x7a\\x69\\x6e\\x66\\x6c\\x61\\x74\\x65" nocase
        // "\145\166\141\154" is "eval" in octal.
        $oct_eval = "\\145\\166\\141\\154"
        $oct_assert = "\\141\\163\\163\\145\\162\\164"
        $oct_system = "\\163\\171\\163\\164\\145\\155"
        $oct_base64_decode = "\\142\\141\\163\\145\\66\\64\\137\\144\\145\\143"
        // chr(101).chr(118).chr(97).chr(108) is "eval".
        $chr_eval = /chr[ \t]*\([ \t]*101[ \t]*\)[ \t]*\.[ \t]*chr[ \t]*\([ \t]*118[ \t]*\)[ \t]*\.[ \t]*chr[ \t]*\([ \t]*97[ \t]*\)[ \t]*\.[ \t]*chr[ \t]*\([ \t]*108[ \t]*\)/ nocase
        $chr_assert = /chr[ \t]*\([ \t]*97[ \t]*\)[ \t]*\.[ \t]*chr[ \t]*\([ \t]*115[ \t]*\)[ \t]*\.[ \t]*chr[ \t]*\([ \t]*115[ \t]*\)[ \t]*\.[ \t]*chr[ \t]*\([ \t]*101[ \t]*\)[ \t]*\.[ \t]*chr[ \t]*\([ \t]*114[ \t]*\)/ nocase
        $chr_system = /chr[ \t]*\([ \t]*115[ \t]*\)[ \t]*\.[ \t]*chr[ \t]*\([ \t]*121[ \t]*\)[ \t]*\.[ \t]*chr[ \t]*\([ \t]*115[ \t]*\)[ \t]*\.[ \t]*chr[ \t]*\([ \t]*116[ \t]*\)/ nocase
        $chr_base64 = /chr[ \t]*\([ \t]*98[ \t]*\)[ \t]*\.[ \t]*chr[ \t]*\([ \t]*97[ \t]*\)[ \t]*\.[ \t]*chr[ \t]*\([ \t]*115[ \t]*\)[ \t]*\.[ \t]*chr[ \t]*\([ \t]*101[ \t]*\)[ \t]*\.[ \t]*chr[ \t]*\([ \t]*54[ \t]*\)/ nocase
        // str_rot13('riny') is "eval", strrev('tressa') is "assert".
        $rot13 = /str_rot13[ \t]*\([ \t]*["'](riny|nffreg|flfgrz|cnffgueh|furyy_rkrp|onfr64_qrpbqr|perngr_shapgvba|tmvasyngr)["']/ nocase
        $rev = /strrev[ \t]*\([ \t]*["'](lave|tressa|metsys|urhtssap|cexe_llehs|edoced_46esab|noitcnuf_etaerc|etalfnizg)["']/ nocase
    condition:
        $tag and any of ($hex*, $oct*, $chr*, $rot13, $rev)
}

rule chopper_one_liner
{
    meta:
        id = "palisade.file.yara.chopper_one_liner"
        description = "China Chopper-style one-liner: PHP @eval($_POST[..]), ASP eval request(..), ASPX eval(Request.Item[..],\"unsafe\"), JSP file writer"
        severity = "critical"
        category = "webshell"
        scope = "file"
    strings:
        // <?php @eval($_POST['x']);?> : the eval is the first statement after the tag.
        $php = /<\?(php)?[ \t\r\n]*@?[ \t]*(eval|assert)[ \t]*\([ \t]*@?\$_(POST|GET|REQUEST|COOKIE)[ \t]*\[/ nocase
        // <%eval request("x")%>, <%execute(request("x"))%> (classic ASP)
        $asp = /<%[ \t]*(eval|execute|executeglobal)[ \t]*\(?[ \t]*request[ \t]*(\.item|\.form)?[ \t]*[\(\[]/ nocase
        // <%@ Page Language="Jscript"%><%eval(Request.Item["x"],"unsafe");%>
        $aspx = /eval[ \t]*\([ \t]*Request(\.Item|\.Form|\.QueryString)?[ \t]*[\[\(][^\]\)\r\n]{1,64}[\]\)][ \t]*,[ \t]*["']unsafe["'][ \t]*\)/ nocase
        // JSP: writes a request parameter to a file under the web root.
        $jsp_writer = /FileOutputStream[ \t]*\([ \t]*application\.getRealPath[ \t]*\([^)]{0,16}\)[ \t]*\+[ \t]*request\.getParameter/
    condition:
        any of them
}

rule jsp_runtime_exec
{
    meta:
        id = "palisade.file.yara.jsp_runtime_exec"
        description = "JSP webshell: Runtime.exec or ProcessBuilder runs a request parameter"
        severity = "critical"
        category = "webshell"
        scope = "file"
    strings:
        $jsp = /<%[@!= \t\r\na-zA-Z]|<jsp:scriptlet/
        // exec(request.getParameter("c")), exec(new String[]{"sh","-c",request.getParameter("c")})
        $direct = /Runtime\.getRuntime\(\)[ \t]*\.[ \t]*exec[ \t]*\([ \t]*(new[ \t]+String[ \t]*\[[ \t]*\][ \t]*\{[^}]{0,96})?request\.getParameter[ \t]*\(/
        $builder = /new[ \t]+ProcessBuilder[ \t]*\([^;]{0,128}request\.getParameter[ \t]*\(/
        // String c = request.getParameter("c"); ... exec(c)  /  exec(new String[]{"sh","-c",c})
        $param_var = /String[ \t]+[a-zA-Z_][a-zA-Z0-9_]{0,30}[ \t]*=[ \t]*request\.getParameter[ \t]*\(/
        $exec_var = /Runtime\.getRuntime\(\)[ \t]*\.[ \t]*exec[ \t]*\([ \t]*(new[ \t]+String[ \t]*\[[ \t]*\][ \t]*\{[^}]{0,96}[,{][ \t]*)?[a-zA-Z_][a-zA-Z0-9_]{0,30}[ \t]*[)}]/
    condition:
        $direct or $builder or ($jsp and $param_var and $exec_var)
}

rule jsp_classloader_shell
{
    meta:
        id = "palisade.file.yara.jsp_classloader_shell"
        description = "JSP webshell (Behinder-style): defines a class from decoded or decrypted request bytes"
        severity = "critical"
        category = "webshell"
        scope = "file"
    strings:
        $jsp = /<%[@!= \t\r\na-zA-Z]|<jsp:scriptlet/
        $loader = /extends[ \t]+ClassLoader/
        $define = /defineClass[ \t]*\(/
        $define_reflect = /getDeclaredMethod[ \t]*\([ \t]*"defineClass"/
        $req_reader = /request\.getReader[ \t]*\(/
        $req_stream = /request\.getInputStream[ \t]*\(/
        $req_param = /request\.getParameter[ \t]*\(/
        $req_header = /request\.getHeader[ \t]*\(/
        $dec_sun = /BASE64Decoder\(\)[ \t]*\.[ \t]*decodeBuffer/
        $dec_util = /Base64\.getDecoder\(\)[ \t]*\.[ \t]*decode/
        $dec_jaxb = "DatatypeConverter.parseBase64Binary"
        $dec_cipher = /Cipher\.getInstance[ \t]*\(/
        // new U(...).g(bytes).newInstance().equals(pageContext)
        $page_context = /\.newInstance\(\)[ \t]*\.[ \t]*equals[ \t]*\([ \t]*pageContext/
    condition:
        $jsp and (
            $page_context or
            ((($loader and $define) or $define_reflect) and any of ($req*) and any of ($dec*))
        )
}

rule aspx_process_start
{
    meta:
        id = "palisade.file.yara.aspx_process_start"
        description = "ASPX webshell: Process.Start runs request input (or a page text box) through a shell"
        severity = "critical"
        category = "webshell"
        scope = "file"
    strings:
        // Process.Start("cmd.exe", "/c " + Request["c"])  (C#; VB uses & and no semicolons).
        // Case-sensitive: desktop code passes its own `request` objects and BuildRequest(..).
        $start_req = /Process\.Start[ \t]*\(([^;\r\n]{0,160}[^a-zA-Z0-9_])?Request[ \t]*(\.[ \t]*(Form|QueryString|Item|Params|Headers|Cookies))?[ \t]*[\[\(]/
        // psi.Arguments = "/c " + Request.Form["c"];  p.Start();
        $args_req = /\.(Arguments|FileName)[ \t]*=([^;\r\n]{0,128}[^a-zA-Z0-9_])?Request[ \t]*(\.[ \t]*(Form|QueryString|Item|Params|Headers|Cookies))?[ \t]*[\[\(]/
        $args_textbox = /\.Arguments[ \t]*=[^;\r\n]{0,64}\.Text[ \t]*(;|\r|\n)/
        // .Arguments/.FileName are common property names: only with a process start info.
        $start_info = /ProcessStartInfo|\.StartInfo[ \t]*\./
        $shell_cmd = "cmd.exe" nocase
        $shell_ps = "powershell" nocase
        $start_static = /Process\.Start[ \t]*\(/
        $start_method = /\.Start[ \t]*\([ \t]*\)/
    condition:
        $start_req or (
            $start_info and ($args_req or ($args_textbox and any of ($shell*))) and
            any of ($start_static, $start_method)
        )
}

rule aspx_assembly_load
{
    meta:
        id = "palisade.file.yara.aspx_assembly_load"
        description = "ASPX webshell (Behinder/Godzilla-style): Assembly.Load of bytes decoded or decrypted from the request"
        severity = "critical"
        category = "webshell"
        scope = "file"
    strings:
        // Assembly.Load(Convert.FromBase64String(Request["x"]))
        // Case-sensitive (C#, and VB as the IDE writes it): `request` is some other object.
        $load_b64_req = /Assembly\.Load[ \t]*\([ \t]*Convert\.FromBase64String[ \t]*\([ \t]*(HttpContext\.Current\.|Context\.|Page\.|this\.)?Request/
        // Assembly.Load(bytes), not Assembly.Load("Some.Assembly.Name")
        $load_bytes = /Assembly\.Load[ \t]*\([ \t]*[^"' \t)]/
        $req_body = /[^a-zA-Z0-9_]Request[ \t]*\.[ \t]*(BinaryRead|InputStream)/
        $req_value = /[^a-zA-Z0-9_]Request[ \t]*(\.[ \t]*(Form|QueryString|Item|Params|Cookies|Headers))?[ \t]*\[/
        $dec_b64 = /Convert\.FromBase64String[ \t]*\(/
        $dec_cipher = /\.TransformFinalBlock[ \t]*\(/
        // .CreateInstance("U").Equals(Context)
        $instance = /\.CreateInstance[ \t]*\([ \t]*["'][A-Za-z_.]{1,32}["'][ \t]*\)[ \t]*\.[ \t]*Equals[ \t]*\(/
    condition:
        $load_b64_req or ($load_bytes and any of ($req*) and any of ($dec*, $instance))
}
