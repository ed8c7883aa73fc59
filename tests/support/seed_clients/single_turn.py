# The original project's README example, verbatim; the test swaps in the gateway's URL.
import sys
import requests
import json


token = {
    "api_key": "Your API Key",  # Replace with your own API Key
    "url": "https://chatgpt.example.com/api"    # Replace with your own instance
}


# ChatGPT API Demo
url = token["url"]
sys_prompt = input("sys> ")

user_input = input("user> ")
data = {
    "system_content": sys_prompt,
    "user_content": user_input,
    "model": "gpt-3.5-turbo",
    "api_key": token["api_key"],
    "continuous": [],
    "max_tokens": 3000
}
response = requests.post(url, json=data)
if response.status_code != 200:
    print(f"Request failed, status code: {response.status_code}, server response: {response.text}")
    sys.exit(1)
else:
    result = json.loads(response.text)
print(f"ChatGPT> {result['current_response']}")
