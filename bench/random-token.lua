-- wrk script: every request carries one of TOKENS distinct bearer tokens
-- (bench-token-1..TOKENS), or one of the lines of TOKEN_FILE when it is set.
-- MODE=seq walks them in order (to fill the cache), MODE=random picks at random.
-- PROOF_FILE (a DPoP-bound token): every request sends its token with the DPoP
-- scheme and the file's next proof (one a line; a proof is good once). When
-- the proofs run out, the thread stops and says so: wrk's numbers then cover
-- the requests made until then.
local tokens = tonumber(os.getenv("TOKENS") or "100000")
local mode = os.getenv("MODE") or "random"
local list, proofs
local i, p = 0, 0

local function lines(path)
  local t = {}
  for line in io.lines(path) do
    t[#t + 1] = line
  end
  return t
end

-- Only the threads' Lua states run init: the files are read once.
function init(args)
  if os.getenv("TOKEN_FILE") then
    list = lines(os.getenv("TOKEN_FILE"))
    tokens = #list
  end
  if os.getenv("PROOF_FILE") then
    proofs = lines(os.getenv("PROOF_FILE"))
  end
end

request = function()
  local n
  if mode == "seq" then
    i = i % tokens + 1
    n = i
  else
    n = math.random(tokens)
  end
  local token = list and list[n] or "bench-token-" .. n
  if proofs then
    p = p + 1
    if p > #proofs then
      if p == #proofs + 1 then
        io.stderr:write("bench: out of DPoP proofs after " .. #proofs .. " requests\n")
        wrk.thread:stop()
      end
      p = #proofs
    end
    return wrk.format("GET", nil, { ["Authorization"] = "DPoP " .. token, ["DPoP"] = proofs[p] })
  end
  return wrk.format("GET", nil, { ["Authorization"] = "Bearer " .. token })
end
